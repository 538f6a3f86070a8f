"""Cashu tokens (NUT-00 V4 `cashuB`, and V3 `cashuA`) and payment requests (NUT-18 `creqA`), pure.

A token is parsed into what a receiver checks before it contacts a mint: which mint, which unit, and
the proofs, each with its keyset id (short or full, as sent), amount, secret and signature. Anything
malformed is `BadToken`, with a reason a client can act on.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cbor2

# Far above any real token (a few hundred proofs); a header is already capped by the HTTP parser.
MAX_TOKEN_CHARS = 64 * 1024
MAX_SECRET_CHARS = 1024
MAX_AMOUNT = 2**63 - 1


class BadToken(ValueError):
    """Not a Cashu token this server can read."""


@dataclass(frozen=True, slots=True)
class Proof:
    amount: int
    keyset_id: str  # hex, as sent: the short (8 bytes) or the full form
    secret: str
    c: str  # compressed point, hex
    witness: str | None = None

    def to_input(self, full_keyset_id: str) -> dict[str, Any]:
        """The proof as a mint's swap takes it (NUT-00 JSON, the full keyset id)."""
        sent: dict[str, Any] = {
            "amount": self.amount,
            "id": full_keyset_id,
            "secret": self.secret,
            "C": self.c,
        }
        if self.witness is not None:
            sent["witness"] = self.witness
        return sent


@dataclass(frozen=True, slots=True)
class Token:
    mint: str  # normalised: no trailing slash
    unit: str
    proofs: tuple[Proof, ...]
    memo: str | None = None

    @property
    def amount(self) -> int:
        return sum(p.amount for p in self.proofs)

    @property
    def key(self) -> str:
        """Names this token whatever its encoding: sha256 of its sorted proofs (amount, signature,
        secret). Two encodings of the same proofs are the same payment; a forgery that reuses a real
        token's secrets is another token, refused on its own, and cannot block the real one."""
        joined = "\n".join(sorted(f"{p.amount} {p.c} {p.secret}" for p in self.proofs))
        return hashlib.sha256(joined.encode("utf-8")).hexdigest()


def normalise_mint(url: str) -> str:
    return url.strip().rstrip("/")


def _b64decode(text: str) -> bytes:
    padded = text + "=" * (-len(text) % 4)
    try:
        return base64.urlsafe_b64decode(padded.replace("+", "-").replace("/", "_"))
    except (binascii.Error, ValueError):
        raise BadToken("the token is not base64") from None


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _is_hex(value: object, *lengths: int) -> bool:
    if not isinstance(value, str) or len(value) not in lengths:
        return False
    try:
        bytes.fromhex(value)
    except ValueError:
        return False
    return True


def _proof(amount: object, keyset_id: str, secret: object, c: object, witness: object) -> Proof:
    if type(amount) is not int or not 0 < amount <= MAX_AMOUNT:
        raise BadToken("every proof's amount must be a positive integer")
    if not isinstance(secret, str) or not 0 < len(secret) <= MAX_SECRET_CHARS:
        raise BadToken(f"every proof needs a secret of 1 to {MAX_SECRET_CHARS} characters")
    if not _is_hex(c, 66):
        raise BadToken("every proof's signature must be a compressed point (33 bytes)")
    assert isinstance(c, str)
    if witness is not None and not isinstance(witness, str):
        raise BadToken("a proof's witness must be a string")
    return Proof(amount, keyset_id.lower(), secret, c.lower(), witness)


def _keyset_id(value: object) -> str:
    if isinstance(value, bytes) and len(value) in (8, 33):
        return value.hex()
    if _is_hex(value, 16, 66):
        assert isinstance(value, str)
        return value.lower()
    raise BadToken("a keyset id must be 8 or 33 bytes")


def _v4(raw: bytes) -> Token:
    try:
        data = cbor2.loads(raw)
    except Exception:
        raise BadToken("the token's CBOR is malformed") from None
    if not isinstance(data, dict):
        raise BadToken("the token must be a CBOR map")
    mint, unit, groups, memo = data.get("m"), data.get("u"), data.get("t"), data.get("d")
    if not isinstance(mint, str) or not isinstance(unit, str) or not isinstance(groups, list):
        raise BadToken("the token needs m (mint), u (unit) and t (proofs)")
    proofs: list[Proof] = []
    for group in groups:
        if not isinstance(group, dict) or not isinstance(group.get("p"), list):
            raise BadToken("each entry of t needs i (keyset id) and p (proofs)")
        keyset_id = _keyset_id(group.get("i"))
        for p in group["p"]:
            if not isinstance(p, dict):
                raise BadToken("each proof must be a map")
            c = p.get("c")
            proofs.append(
                _proof(p.get("a"), keyset_id, p.get("s"), c.hex() if isinstance(c, bytes) else c, p.get("w"))
            )
    return _token(mint, unit, proofs, memo)


def _v3(raw: bytes) -> Token:
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadToken("the token's JSON is malformed") from None
    entries = data.get("token") if isinstance(data, dict) else None
    if not isinstance(entries, list) or len(entries) != 1 or not isinstance(entries[0], dict):
        raise BadToken("the token must hold proofs of exactly one mint")
    mint, unit, memo = entries[0].get("mint"), data.get("unit", "sat"), data.get("memo")
    listed = entries[0].get("proofs")
    if not isinstance(mint, str) or not isinstance(unit, str) or not isinstance(listed, list):
        raise BadToken("the token needs a mint, a unit and proofs")
    proofs = []
    for p in listed:
        if not isinstance(p, dict):
            raise BadToken("each proof must be an object")
        proofs.append(
            _proof(p.get("amount"), _keyset_id(p.get("id")), p.get("secret"), p.get("C"), p.get("witness"))
        )
    return _token(mint, unit, proofs, memo)


def _token(mint: str, unit: str, proofs: Sequence[Proof], memo: object) -> Token:
    if not proofs:
        raise BadToken("the token holds no proofs")
    if len({p.secret for p in proofs}) != len(proofs):
        raise BadToken("the token holds the same proof twice")
    if not mint.startswith(("https://", "http://")):
        raise BadToken("the token's mint must be an http(s) URL")
    if sum(p.amount for p in proofs) > MAX_AMOUNT:
        raise BadToken("the token's amount is out of range")
    return Token(normalise_mint(mint), unit, tuple(proofs), memo if isinstance(memo, str) else None)


def parse_token(text: str) -> Token:
    """A `cashuB…` (or `cashuA…`) token, with or without a `cashu:` prefix; BadToken otherwise."""
    value = text.strip()
    if value.lower().startswith("cashu:"):
        value = value[len("cashu:") :]
    if len(value) > MAX_TOKEN_CHARS:
        raise BadToken("the token is too long")
    if value.startswith("cashuB"):
        return _v4(_b64decode(value[6:]))
    if value.startswith("cashuA"):
        return _v3(_b64decode(value[6:]))
    raise BadToken("X-Cashu must be a Cashu token: cashuB… (or cashuA…)")


def encode_token(mint: str, unit: str, proofs: Sequence[dict[str, Any]], memo: str | None = None) -> str:
    """A `cashuB…` token of NUT-00 proofs (full keyset ids) from one mint, grouped by keyset."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for p in proofs:
        groups.setdefault(str(p["id"]), []).append(
            {"a": int(p["amount"]), "s": str(p["secret"]), "c": bytes.fromhex(str(p["C"]))}
        )
    data: dict[str, Any] = {
        "m": normalise_mint(mint),
        "u": unit,
        "t": [{"i": bytes.fromhex(i), "p": ps} for i, ps in groups.items()],
    }
    if memo:
        data["d"] = memo
    return "cashuB" + _b64encode(cbor2.dumps(data))


def payment_request(
    *,
    amount: int,
    unit: str,
    mints: Sequence[str],
    request_id: str | None = None,
    description: str | None = None,
) -> str:
    """A NUT-18 payment request, `creqA…`, with no transport: the token comes back in-band (NUT-24)."""
    data: dict[str, Any] = {}
    if request_id is not None:
        data["i"] = request_id
    data.update({"a": amount, "u": unit, "s": True, "m": [normalise_mint(m) for m in mints]})
    if description is not None:
        data["d"] = description
    return "creqA" + _b64encode(cbor2.dumps(data))


def decode_payment_request(text: str) -> dict[str, Any]:
    """The fields of a `creqA…` request (for tests and tools)."""
    if not text.startswith("creqA"):
        raise BadToken("not a creqA payment request")
    data = cbor2.loads(_b64decode(text[5:]))
    if not isinstance(data, dict):
        raise BadToken("a payment request must be a CBOR map")
    return data
