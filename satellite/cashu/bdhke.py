"""The receiver's side of Cashu's blind Diffie-Hellman key exchange (NUT-00), pure.

To take a token, the server swaps its proofs at the mint for new ones only it can spend: for each new
proof it picks a secret `x` and a blinding factor `r`, sends `B_ = hash_to_curve(x) + rG`, gets back
`C_ = kB_`, and keeps `C = C_ - rK = k hash_to_curve(x)`. Also the fee rule of NUT-02 and the split of
an amount into the powers of two a keyset signs.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

import secp256k1

DOMAIN_SEPARATOR = b"Secp256k1_HashToCurve_Cashu_"
# The order of secp256k1's group.
CURVE_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


class BadPoint(ValueError):
    """Bytes that are not a point of secp256k1 (a mint's key or signature)."""


def point(compressed_hex: str) -> secp256k1.PublicKey:
    """A curve point from its SEC1 compressed hex; BadPoint if it is not one."""
    try:
        raw = bytes.fromhex(compressed_hex)
        if len(raw) != 33 or raw[0] not in (2, 3):
            raise ValueError
        return secp256k1.PublicKey(raw, raw=True)
    except Exception:
        raise BadPoint(f"not a compressed secp256k1 point: {compressed_hex[:80]!r}") from None


def _hex(p: secp256k1.PublicKey) -> str:
    serialized: bytes = p.serialize(compressed=True)
    return serialized.hex()


def hash_to_curve(message: bytes) -> secp256k1.PublicKey:
    """Y = PublicKey('02' || SHA256(SHA256(DOMAIN_SEPARATOR || x) || counter)), for the first uint32
    little-endian counter that gives a point."""
    msg_hash = hashlib.sha256(DOMAIN_SEPARATOR + message).digest()
    for counter in range(2**16):
        candidate = b"\x02" + hashlib.sha256(msg_hash + counter.to_bytes(4, "little")).digest()
        try:
            return secp256k1.PublicKey(candidate, raw=True)
        except Exception:
            continue
    raise BadPoint("no point found")  # about 2**-65536 likely


def _times(p: secp256k1.PublicKey, scalar: int) -> secp256k1.PublicKey:
    out = secp256k1.PublicKey(p.serialize(compressed=True), raw=True)
    tweaked: secp256k1.PublicKey = out.tweak_mul(scalar.to_bytes(32, "big"))
    return tweaked


def _sum(*points: secp256k1.PublicKey) -> secp256k1.PublicKey:
    total = secp256k1.PublicKey()
    total.public_key = total.combine([p.public_key for p in points])
    return total


def blind(secret: str, r: int) -> str:
    """B_ = hash_to_curve(secret) + rG, as compressed hex (`r` in 1..n-1)."""
    r_g = secp256k1.PrivateKey(r.to_bytes(32, "big"), raw=True).pubkey
    assert r_g is not None
    return _hex(_sum(hash_to_curve(secret.encode("utf-8")), r_g))


def unblind(c_blinded_hex: str, r: int, mint_key_hex: str) -> str:
    """C = C_ - rK, as compressed hex (BadPoint if the mint sent something that is not a point)."""
    c_blinded = point(c_blinded_hex)
    minus_r_k = _times(point(mint_key_hex), CURVE_ORDER - r)
    return _hex(_sum(c_blinded, minus_r_k))


def random_scalar() -> int:
    return secrets.randbelow(CURVE_ORDER - 1) + 1


def split_amount(amount: int) -> list[int]:
    """The powers of two that sum to `amount`, ascending (the order NUT-03 asks of outputs)."""
    if amount < 0:
        raise ValueError("amount must not be negative")
    return [1 << i for i in range(amount.bit_length()) if amount >> i & 1]


def input_fee(fees_ppk: Iterable[int]) -> int:
    """NUT-02: the fee of a swap, from each input's keyset's `input_fee_ppk`, rounded up to a whole unit."""
    return (sum(fees_ppk) + 999) // 1000


@dataclass(frozen=True, slots=True)
class Output:
    """A blinded message this server sends, with what it needs to unblind the answer."""

    amount: int
    keyset_id: str
    secret: str
    r: int
    b_: str

    def to_message(self) -> dict[str, object]:
        return {"amount": self.amount, "id": self.keyset_id, "B_": self.b_}

    def to_record(self) -> dict[str, object]:
        return {
            "amount": self.amount,
            "id": self.keyset_id,
            "secret": self.secret,
            "r": f"{self.r:064x}",
            "B_": self.b_,
        }

    @classmethod
    def from_record(cls, record: dict[str, object]) -> Output:
        return cls(
            amount=int(str(record["amount"])),
            keyset_id=str(record["id"]),
            secret=str(record["secret"]),
            r=int(str(record["r"]), 16),
            b_=str(record["B_"]),
        )


def new_outputs(amount: int, keyset_id: str) -> list[Output]:
    """Fresh blinded messages for `amount`, one per power of two, each with a random 32-byte secret."""
    outputs = []
    for part in split_amount(amount):
        secret = secrets.token_hex(32)
        r = random_scalar()
        outputs.append(Output(part, keyset_id, secret, r, blind(secret, r)))
    return outputs
