"""Secret keys: generation, signing events, hex/nsec/npub encodings, the persisted service key."""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path

import bech32
import secp256k1

from satellite.nostr.event import Event, compute_id, is_hex


class InvalidKey(ValueError):
    """A key string that is neither 64 hex characters nor a valid bech32 nsec."""


def _bech32_decode(text: str, expected_hrp: str) -> bytes:
    hrp, data = bech32.bech32_decode(text)
    if hrp != expected_hrp or data is None:
        raise InvalidKey(f"not a valid {expected_hrp}")
    raw = bech32.convertbits(data, 5, 8, False)
    if raw is None or len(raw) != 32:
        raise InvalidKey(f"not a valid {expected_hrp}")
    return bytes(raw)


def _bech32_encode(hrp: str, raw: bytes) -> str:
    words = bech32.convertbits(raw, 8, 5)
    assert words is not None  # only a 5-to-8 conversion can fail
    encoded: str = bech32.bech32_encode(hrp, words)
    return encoded


def npub_encode(pubkey_hex: str) -> str:
    return _bech32_encode("npub", bytes.fromhex(pubkey_hex))


def npub_decode(npub: str) -> str:
    return _bech32_decode(npub, "npub").hex()


def parse_pubkey(text: str) -> str:
    """A public key given as npub or as 64 hex characters (either case), as lowercase hex."""
    value = text.strip()
    if value.lower().startswith("npub1"):
        return npub_decode(value.lower())
    if is_hex(value.lower(), 64):
        return value.lower()
    raise InvalidKey("not a public key: give an npub or 64 hex characters")


@dataclass(frozen=True)
class SecretKey:
    raw: bytes

    @classmethod
    def generate(cls) -> SecretKey:
        while True:
            raw = secrets.token_bytes(32)
            try:
                secp256k1.PrivateKey(raw, raw=True)
            except Exception:  # pragma: no cover - probability 2**-128
                continue
            return cls(raw)

    @classmethod
    def parse(cls, text: str) -> SecretKey:
        text = text.strip()
        if text.startswith("nsec1"):
            raw = _bech32_decode(text, "nsec")
        elif is_hex(text.lower(), 64):
            raw = bytes.fromhex(text)
        else:
            raise InvalidKey("a secret key must be 64 hex characters or an nsec")
        try:
            secp256k1.PrivateKey(raw, raw=True)
        except Exception as exc:
            raise InvalidKey("not a valid secp256k1 secret key") from exc
        return cls(raw)

    @property
    def _key(self) -> secp256k1.PrivateKey:
        return secp256k1.PrivateKey(self.raw, raw=True)

    @property
    def pubkey(self) -> str:
        """x-only public key, hex (the Nostr pubkey)."""
        compressed: bytes = self._key.pubkey.serialize()
        return compressed[1:].hex()

    @property
    def nsec(self) -> str:
        return _bech32_encode("nsec", self.raw)

    @property
    def npub(self) -> str:
        return npub_encode(self.pubkey)

    def sign_hash(self, digest: bytes) -> bytes:
        signature: bytes = self._key.schnorr_sign(digest, None, raw=True)
        return signature

    def sign_event(self, *, kind: int, content: str, tags: list[list[str]], created_at: int) -> Event:
        pubkey = self.pubkey
        event_id = compute_id(pubkey, created_at, kind, tags, content)
        sig = self.sign_hash(bytes.fromhex(event_id)).hex()
        # Built directly: the size limits of `event_from_obj` are for events we receive, not ours.
        return Event(
            id=event_id,
            pubkey=pubkey,
            created_at=created_at,
            kind=kind,
            tags=tuple(tuple(t) for t in tags),
            content=content,
            sig=sig,
        )


def load_or_create_service_key(configured: str, key_file: Path) -> SecretKey:
    """The configured key, else the one kept in `key_file`, else a new one written there (mode 0600)."""
    if configured:
        return SecretKey.parse(configured)
    if key_file.exists():
        return SecretKey.parse(key_file.read_text())
    key = SecretKey.generate()
    key_file.parent.mkdir(parents=True, exist_ok=True)
    # A temp file of our own (mkstemp: unique name, mode 0600): with a shared name, a concurrent start-up
    # could truncate it after we linked it, or unlink it before its own link.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{key_file.name}-", suffix=".tmp", dir=key_file.parent)
    tmp = Path(tmp_name)
    try:
        try:
            os.write(fd, (key.raw.hex() + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        with contextlib.suppress(FileExistsError):
            os.link(tmp, key_file)  # fails if another process created it first: keep theirs
    finally:
        tmp.unlink(missing_ok=True)
    return SecretKey.parse(key_file.read_text())
