"""A trusted mint's HTTP API, as far as a receiver needs it (NUT-01, 02, 03, 09).

- `GET /v1/keysets`: every keyset with its unit, `active` and `input_fee_ppk`.
- `GET /v1/keys/{id}`: a keyset's public key for each amount.
- `POST /v1/swap` {inputs, outputs} -> {signatures}: spends the inputs, signs the outputs.
- `POST /v1/restore` {outputs} -> {outputs, signatures}: the signatures the mint already gave for
  these outputs, so a swap whose answer was lost can be recovered.

A mint that cannot be reached, answers late (`timeout_seconds` per call) or answers with something
that is not its API is `MintUnavailable`: nothing is known to have happened. A 400 with NUT-00's
{detail, code} is `MintRefused`, except "pending" (11002, 11004): an operation still in flight there.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

MAX_ANSWER_BYTES = 1 << 20
PENDING_CODES = frozenset({11002, 11004})
# 100 sat an input: past this, a keyset's fee is not a mint's but a fault (and would make the 402's
# fee estimate, `cashu_pay.amount_with_fee`, search far).
MAX_FEE_PPK = 100_000
ALREADY_SPENT = 11001


class MintUnavailable(Exception):
    """The mint did not answer usefully; what it did is unknown."""


class MintRefused(Exception):
    def __init__(self, detail: str, code: int | None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.code = code


@dataclass(frozen=True, slots=True)
class Keyset:
    id: str
    unit: str
    active: bool
    input_fee_ppk: int


@dataclass(frozen=True, slots=True)
class MintClient:
    session: aiohttp.ClientSession
    timeout_seconds: float
    # keysets as last read, by mint: (when, keysets), for the 402's fee estimate only
    _seen: dict[str, tuple[float, dict[str, Keyset]]] = field(default_factory=dict, repr=False)

    async def _call(self, method: str, url: str, body: dict[str, Any] | None = None) -> Any:
        try:
            async with asyncio.timeout(self.timeout_seconds):
                async with self.session.request(
                    method, url, json=body, allow_redirects=False, headers={"Accept": "application/json"}
                ) as response:
                    raw = await response.content.read(MAX_ANSWER_BYTES + 1)
                    status = response.status
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise MintUnavailable(f"{method} {url}: {type(exc).__name__} {exc}".strip()) from None
        if len(raw) > MAX_ANSWER_BYTES:
            raise MintUnavailable(f"{method} {url}: answer over {MAX_ANSWER_BYTES} bytes")
        try:
            data = json.loads(raw)
        except ValueError:
            raise MintUnavailable(f"{method} {url}: HTTP {status}, not JSON") from None
        if status == 400 and isinstance(data, dict):
            code = data.get("code")
            detail = str(data.get("detail") or "refused")[:300]
            code = code if type(code) is int else None
            if code in PENDING_CODES:
                raise MintUnavailable(f"{method} {url}: pending ({detail})")
            raise MintRefused(detail, code)
        if status != 200:
            raise MintUnavailable(f"{method} {url}: HTTP {status}")
        return data

    async def keysets(self, mint: str, *, max_age_seconds: float = 0) -> dict[str, Keyset]:
        """Every keyset of the mint; with `max_age_seconds`, as read that recently, if it was."""
        seen = self._seen.get(mint)
        if seen is not None and time.monotonic() - seen[0] < max_age_seconds:
            return seen[1]
        found = await self._read_keysets(mint)
        self._seen[mint] = (time.monotonic(), found)
        return found

    async def _read_keysets(self, mint: str) -> dict[str, Keyset]:
        data = await self._call("GET", f"{mint}/v1/keysets")
        found: dict[str, Keyset] = {}
        try:
            for k in data["keysets"]:
                fee = k.get("input_fee_ppk") or 0
                if not isinstance(k["id"], str) or type(fee) is not int or not 0 <= fee <= MAX_FEE_PPK:
                    raise ValueError
                found[k["id"].lower()] = Keyset(k["id"].lower(), str(k["unit"]), bool(k["active"]), fee)
        except (KeyError, TypeError, ValueError, AttributeError):
            raise MintUnavailable(f"{mint}/v1/keysets: not a keyset list") from None
        return found

    async def keys(self, mint: str, keyset_id: str) -> dict[int, str]:
        data = await self._call("GET", f"{mint}/v1/keys/{keyset_id}")
        try:
            (entry,) = [k for k in data["keysets"] if str(k["id"]).lower() == keyset_id]
            return {int(amount): str(key) for amount, key in entry["keys"].items()}
        except (KeyError, TypeError, ValueError, AttributeError):
            raise MintUnavailable(f"{mint}/v1/keys/{keyset_id}: not that keyset's keys") from None

    async def swap(
        self, mint: str, inputs: list[dict[str, Any]], outputs: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """The mint's blind signatures for `outputs`, in their order (it has spent `inputs`)."""
        data = await self._call("POST", f"{mint}/v1/swap", {"inputs": inputs, "outputs": outputs})
        signatures = data.get("signatures") if isinstance(data, dict) else None
        if not isinstance(signatures, list) or len(signatures) != len(outputs):
            raise MintUnavailable(f"{mint}/v1/swap: not one signature per output")
        return [_signature(s, mint) for s in signatures]

    async def restore(self, mint: str, outputs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """The signatures the mint has already given for any of `outputs`, by their B_."""
        data = await self._call("POST", f"{mint}/v1/restore", {"outputs": outputs})
        if not isinstance(data, dict):
            raise MintUnavailable(f"{mint}/v1/restore: not an object")
        signed = data.get("signatures", data.get("promises"))
        echoed = data.get("outputs")
        if not isinstance(signed, list) or not isinstance(echoed, list) or len(signed) != len(echoed):
            raise MintUnavailable(f"{mint}/v1/restore: outputs and signatures do not pair")
        found: dict[str, dict[str, Any]] = {}
        for output, signature in zip(echoed, signed, strict=True):
            if not isinstance(output, dict) or not isinstance(output.get("B_"), str):
                raise MintUnavailable(f"{mint}/v1/restore: an output without B_")
            found[output["B_"].lower()] = _signature(signature, mint)
        return found


def _signature(value: object, mint: str) -> dict[str, Any]:
    if (
        not isinstance(value, dict)
        or type(value.get("amount")) is not int
        or not isinstance(value.get("id"), str)
        or not isinstance(value.get("C_"), str)
    ):
        raise MintUnavailable(f"{mint}: a blind signature without amount, id and C_")
    return {"amount": value["amount"], "id": value["id"].lower(), "C_": value["C_"].lower()}
