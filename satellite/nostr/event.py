"""Nostr events (NIP-01): strict parsing, canonical id, BIP-340 signatures. Pure: no I/O."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import secp256k1

HEX64 = frozenset("0123456789abcdef")
MAX_TAGS = 64
MAX_TAG_ITEMS = 16
MAX_TAG_ITEM_CHARS = 2048
MAX_CONTENT_CHARS = 4096


class EventError(ValueError):
    """The event is malformed or does not verify; the message names the rule that failed."""


def is_hex(value: object, length: int) -> bool:
    return isinstance(value, str) and len(value) == length and set(value) <= HEX64


@dataclass(frozen=True, slots=True)
class Event:
    id: str
    pubkey: str
    created_at: int
    kind: int
    tags: tuple[tuple[str, ...], ...]
    content: str
    sig: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "pubkey": self.pubkey,
            "created_at": self.created_at,
            "kind": self.kind,
            "tags": [list(t) for t in self.tags],
            "content": self.content,
            "sig": self.sig,
        }

    def tag_values(self, name: str) -> list[str]:
        """Second element of every tag called `name`, in order."""
        return [t[1] for t in self.tags if len(t) >= 2 and t[0] == name]

    def first_tag(self, name: str) -> str | None:
        values = self.tag_values(name)
        return values[0] if values else None


def serialize_for_id(pubkey: str, created_at: int, kind: int, tags: Any, content: str) -> bytes:
    """The NIP-01 serialization whose sha256 is the event id.

    `json.dumps` with `ensure_ascii=False` writes the same bytes as JavaScript's JSON.stringify:
    short escapes for \\n \\" \\\\ \\r \\t \\b \\f, \\u00XX for other control characters, everything else
    verbatim. Lone surrogates cannot be encoded as UTF-8 and are rejected.
    """
    text = json.dumps([0, pubkey, created_at, kind, tags, content], separators=(",", ":"), ensure_ascii=False)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise EventError("event contains text that is not valid UTF-8") from exc


def compute_id(pubkey: str, created_at: int, kind: int, tags: Any, content: str) -> str:
    return hashlib.sha256(serialize_for_id(pubkey, created_at, kind, tags, content)).hexdigest()


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise EventError(message)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def event_from_obj(obj: object) -> Event:
    """Check the shape and types of a decoded JSON event; does not verify id or signature."""
    _require(isinstance(obj, dict), "event must be a JSON object")
    assert isinstance(obj, dict)
    for key in ("id", "pubkey", "created_at", "kind", "tags", "content", "sig"):
        _require(key in obj, f"event is missing '{key}'")
    _require(is_hex(obj["id"], 64), "event id must be 64 lowercase hex characters")
    _require(is_hex(obj["pubkey"], 64), "event pubkey must be 64 lowercase hex characters")
    _require(is_hex(obj["sig"], 128), "event sig must be 128 lowercase hex characters")
    _require(_is_int(obj["created_at"]) and 0 <= obj["created_at"] < 2**53, "created_at must be an integer")
    _require(_is_int(obj["kind"]) and 0 <= obj["kind"] <= 65535, "kind must be an integer")
    _require(isinstance(obj["content"], str), "content must be a string")
    _require(len(obj["content"]) <= MAX_CONTENT_CHARS, "content is too long")
    tags = obj["tags"]
    _require(isinstance(tags, list), "tags must be an array")
    _require(len(tags) <= MAX_TAGS, f"too many tags (at most {MAX_TAGS})")
    parsed: list[tuple[str, ...]] = []
    for tag in tags:
        _require(isinstance(tag, list) and len(tag) >= 1, "each tag must be a non-empty array")
        _require(len(tag) <= MAX_TAG_ITEMS, f"a tag has too many items (at most {MAX_TAG_ITEMS})")
        _require(all(isinstance(item, str) for item in tag), "tag items must be strings")
        _require(all(len(item) <= MAX_TAG_ITEM_CHARS for item in tag), "a tag item is too long")
        parsed.append(tuple(tag))
    return Event(
        id=obj["id"],
        pubkey=obj["pubkey"],
        created_at=obj["created_at"],
        kind=obj["kind"],
        tags=tuple(parsed),
        content=obj["content"],
        sig=obj["sig"],
    )


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("an object has the same key twice")  # readers would disagree on its value
    return obj


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_event(text: str) -> Event:
    """Parse event JSON text; raises EventError naming the first rule broken. Only strict JSON: no
    NaN or Infinity, and no key twice in an object (other readers of the same text, such as the
    wallet checking an invoice's description, could see other values than we verified)."""
    try:
        obj = json.loads(text, object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constants)
    # ValueError, not only JSONDecodeError: a number longer than Python's int-parsing limit (4300 digits)
    # raises a plain ValueError, which would otherwise escape as a 500.
    except (ValueError, RecursionError) as exc:
        raise EventError("event is not valid JSON") from exc
    return event_from_obj(obj)


def verify_id(event: Event) -> bool:
    tags = [list(t) for t in event.tags]
    return compute_id(event.pubkey, event.created_at, event.kind, tags, event.content) == event.id


def verify_signature(event: Event) -> bool:
    """BIP-340 Schnorr signature of the id by the x-only pubkey."""
    try:
        key = secp256k1.PublicKey(b"\x02" + bytes.fromhex(event.pubkey), raw=True)
        return bool(key.schnorr_verify(bytes.fromhex(event.id), bytes.fromhex(event.sig), None, raw=True))
    except Exception:  # not a point on the curve, or a malformed signature
        return False


def verify(event: Event) -> None:
    """Raise EventError unless the id is the canonical hash and the signature is valid."""
    if not verify_id(event):
        raise EventError("event id does not match its content")
    if not verify_signature(event):
        raise EventError("event signature is invalid")
