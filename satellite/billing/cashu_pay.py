"""Paying a 402 with Cashu ecash (NUT-24): the token a client retries with is swapped at a trusted
mint for proofs only this server can spend, and pays the Cashu offer the 402 made, once.

The order makes every failure safe:
1. Everything that needs no mint is checked first (the mint is trusted, the unit is sat, the proofs
   are few enough, an offer is open, the face value covers it): a refusal here spends nothing.
2. The keysets give the input fee, which the token pays: what is left must cover the offer.
3. A row records the token and the outputs asked for (their secrets and blinding factors) *before*
   the mint is asked, leased to this request. One token per offer, one row per token.
4. The swap. A refusal from the mint (spent, forged) marks the row refused, a record only: the token
   may come again, and the offer is free for another. No answer at all leaves it
   `swapping` and answers 503: the next attempt with the same token asks the mint which of our outputs
   it signed (NUT-09 restore), so a lost answer, a crash or a dropped client loses nothing.
5. The signatures are unblinded and kept (`swapped`), then the offer is paid, the account credited and
   the row `credited` in one transaction, with a signed receipt like a Lightning purchase's.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import structlog

from satellite.billing.balance import BLOCKED_ACCOUNT
from satellite.billing.events import make_receipt
from satellite.billing.policy import AccountPolicy
from satellite.billing.settle import credit_account
from satellite.cashu import bdhke
from satellite.cashu.mint_client import ALREADY_SPENT, Keyset, MintClient, MintRefused
from satellite.cashu.mint_client import MintUnavailable as NoAnswer
from satellite.cashu.token import BadToken, Token, parse_token
from satellite.db import cashu as cashu_db
from satellite.db import offers
from satellite.db.blocklist import is_account_blocked
from satellite.errors import AccountBlocked, MintUnavailable, ProofRefused
from satellite.nostr.keys import SecretKey

log = structlog.get_logger("satellite.billing.cashu")
UNIT = "sat"
# How often a request waiting for another one's swap of the same token looks again.
WAIT_SECONDS = 0.1
ANOTHER_TOKEN = (
    "another token is paying this payment request right now (this one was not spent): send the request"
    " again without X-Cashu, once that is done, for a new one"
)
# A 402's fee estimate may use a mint's keysets read this long ago; a swap always reads them afresh.
KEYSETS_MAX_AGE_SECONDS = 60.0


def sats_for(amount_msat: int) -> int:
    """What a Cashu offer asks, in whole sats (rounded up: never less than its Lightning price)."""
    return math.ceil(amount_msat / 1000)


def amount_with_fee(price: int, fee_ppk: int) -> int:
    """What a payment request asks for `price` at a mint charging `fee_ppk` an input (pure): the least
    amount that, sent as its own binary split (the fewest proofs), still leaves `price` after the fee
    the server pays to swap it."""
    amount = price
    while amount - bdhke.input_fee([fee_ppk] * len(bdhke.split_amount(amount))) < price:
        amount += 1
    return amount


def offer_paid_by(open_offers: list[offers.OfferRow], received: int) -> offers.OfferRow | None:
    """Which of a buyer's open Cashu offers for this upload a token worth `received` (after the fee)
    pays (pure): the largest it pays in full, so a token sent for a larger 402 never pays a smaller
    one and loses the difference; None if it pays none."""
    payable = [o for o in open_offers if sats_for(o.amount_msat) <= received]
    return max(payable, key=lambda o: (o.gb_months, o.amount_msat, o.id), default=None)


def resolve_keyset(sent_id: str, keysets: dict[str, Keyset]) -> Keyset:
    """The mint's keyset a proof names, by its full or short (first 8 bytes) id (NUT-00); ProofRefused
    if it names none, or more than one."""
    if sent_id in keysets:
        return keysets[sent_id]
    matches = [k for k in keysets.values() if len(sent_id) == 16 and k.id.startswith(sent_id)]
    if len(matches) != 1:
        why = "is ambiguous" if matches else "is not one of the mint's"
        raise ProofRefused(f"the token's keyset {sent_id} {why}")
    return matches[0]


def inputs_and_fee(token: Token, keysets: dict[str, Keyset]) -> tuple[list[dict[str, Any]], int]:
    """The token's proofs as the swap's inputs (full keyset ids), and the mint's fee for them."""
    inputs, fees = [], []
    for proof in token.proofs:
        keyset = resolve_keyset(proof.keyset_id, keysets)
        if keyset.unit != UNIT:
            raise ProofRefused(f"the token's keyset {keyset.id} is in {keyset.unit}, not {UNIT}")
        inputs.append(proof.to_input(keyset.id))
        fees.append(keyset.input_fee_ppk)
    return inputs, bdhke.input_fee(fees)


async def _nothing() -> None:
    """Another request of the same token has counted this attempt already."""


@dataclass(frozen=True, slots=True)
class CashuRules:
    mints: tuple[str, ...]  # trusted, normalised (no trailing slash)
    max_proofs: int
    mint_timeout_seconds: float

    @property
    def lease(self) -> timedelta:
        """How long one attempt may take: a restore, a swap and a restore, and a margin."""
        return timedelta(seconds=3 * self.mint_timeout_seconds + 5)


@dataclass(frozen=True, slots=True)
class CashuPay:
    pool: asyncpg.Pool
    client: MintClient
    rules: CashuRules
    service_key: SecretKey
    policy: AccountPolicy
    now: Callable[[], datetime]

    async def request_for(self, price: int) -> tuple[int, tuple[str, ...]]:
        """What a 402's payment request asks (the price plus the input fee of a token of the fewest
        proofs, at the dearest of the mints), and of which mints: those that answer now (their
        keysets read at most a minute ago). MintUnavailable if none does."""
        fees: list[int] = []
        answering: list[str] = []
        for mint in self.rules.mints:
            try:
                keysets = await self.client.keysets(mint, max_age_seconds=KEYSETS_MAX_AGE_SECONDS)
            except NoAnswer as exc:
                log.warning("cashu mint left out of a 402: it did not answer", mint=mint, error=str(exc))
                continue
            answering.append(mint)
            fees.extend(k.input_fee_ppk for k in keysets.values() if k.unit == UNIT)
        if not answering:
            raise MintUnavailable("no trusted mint answers now")
        return amount_with_fee(price, max(fees, default=0)), tuple(answering)

    async def redeem(
        self,
        *,
        pubkey: str,
        sha256: str | None,
        raw_token: str,
        before_mint: Callable[[], Awaitable[None]],
    ) -> None:
        """Take the token as payment of this buyer's open Cashu offer for this blob, and credit it.
        ProofRefused (400) if it cannot pay it, MintUnavailable (503) if the mint must be asked and
        cannot answer now (the token is kept for the next attempt). `before_mint` runs before this
        attempt first asks the mint anything (the credit-request limit)."""
        try:
            token = parse_token(raw_token)
        except BadToken as exc:
            raise ProofRefused(str(exc)) from None
        if token.mint not in self.rules.mints:
            raise ProofRefused(
                f"this server takes no tokens of {token.mint}; it takes tokens of"
                f" {', '.join(self.rules.mints)}"
            )
        if token.unit != UNIT:
            raise ProofRefused(f"the token is in {token.unit}; this server takes {UNIT}")
        if len(token.proofs) > self.rules.max_proofs:
            raise ProofRefused(
                f"a token may hold at most {self.rules.max_proofs} proofs: swap it for fewer first"
            )
        known = await cashu_db.get(self.pool, token.key)
        if known is not None:
            return await self._resume(known, pubkey, before_mint)
        open_offers = await offers.open_cashu_offers(
            self.pool, pubkey=pubkey, sha256=sha256, payable_after=self.now()
        )
        if not open_offers:
            if await offers.cashu_offer_being_paid(self.pool, pubkey=pubkey, sha256=sha256):
                raise ProofRefused(ANOTHER_TOKEN)
            raise ProofRefused(
                "no Cashu payment request of this server is open for this upload: send the request without"
                " X-Cashu to get one"
            )
        cheapest = min(sats_for(o.amount_msat) for o in open_offers)
        if token.amount < cheapest:
            raise ProofRefused(
                f"the token holds {token.amount} sat; {cheapest} sat are asked: nothing was spent"
            )
        await before_mint()
        keysets = await self._ask(self.client.keysets(token.mint))
        inputs, fee = inputs_and_fee(token, keysets)
        received = token.amount - fee
        offer = offer_paid_by(open_offers, received)
        if offer is None:
            raise ProofRefused(
                f"the token holds {token.amount} sat, {received} after the mint's input fee of {fee} sat;"
                f" {cheapest} sat are asked: send a token of at least {cheapest + fee} sat. Nothing was spent"
            )
        active = sorted(k.id for k in keysets.values() if k.active and k.unit == UNIT)
        if not active:
            raise MintUnavailable("the mint has no active sat keyset to sign with now: try again later")
        keys = await self._ask(self.client.keys(token.mint, active[0]))
        outputs = bdhke.new_outputs(received, active[0])
        if any(o.amount not in keys for o in outputs):
            raise MintUnavailable("the mint's keyset cannot sign these amounts now: try again later")
        now = self.now()
        try:
            started = await cashu_db.start(
                self.pool,
                token_key=token.key,
                offer_id=offer.id,
                pubkey=pubkey,
                mint=token.mint,
                inputs=inputs,
                outputs=[o.to_record() for o in outputs],
                amount_sat=token.amount,
                fee_sat=fee,
                lease_until=now + self.rules.lease,
                now=now,
            )
        except asyncpg.UniqueViolationError:
            # the offer's index can answer before the token's: is it this very token, sent twice?
            same = await cashu_db.get(self.pool, token.key)
            if same is not None:
                return await self._resume(same, pubkey, _nothing)
            raise ProofRefused(ANOTHER_TOKEN) from None
        except asyncpg.PostgresError as exc:
            if is_account_blocked(exc):
                raise AccountBlocked(BLOCKED_ACCOUNT) from None
            raise
        row = await cashu_db.get(self.pool, token.key)
        if row is None:  # recorded by another request a moment ago, and refused by the mint since
            raise ProofRefused("the mint refused this token. Nothing was credited")
        if not started:  # another request recorded the same token a moment ago
            return await self._resume(row, pubkey, _nothing)
        log.info(
            "cashu token received", pubkey=pubkey, offer=offer.id, mint=token.mint, sat=token.amount, fee=fee
        )
        await self._swap(row, resumed=False)

    async def _ask(self, call: Any) -> Any:
        try:
            return await call
        except NoAnswer as exc:
            log.warning("cashu mint did not answer", error=str(exc))
            raise MintUnavailable(
                "the mint cannot be reached now: try again (the token was not spent)"
            ) from None
        except MintRefused as exc:
            raise ProofRefused(f"the mint refused: {exc.detail}") from None

    async def _resume(
        self, row: cashu_db.Redemption, pubkey: str, before_mint: Callable[[], Awaitable[None]]
    ) -> None:
        """A token this server has taken or is taking: spent, or still to be finished (by this request, if
        the one working on it has given it up; else once that one is done)."""
        if row.pubkey != pubkey:
            raise ProofRefused("this token has already been sent by another account")
        give_up = time.monotonic() + self.rules.lease.total_seconds() + 5
        while True:
            if row.state == "credited":
                raise ProofRefused("this token has already been spent here")
            if row.state == "swapped":
                if await self._credit(row.token_key):
                    return
                raise ProofRefused("this token has already been spent here")
            now = self.now()
            if row.lease_until <= now:
                await before_mint()
                if await cashu_db.take_lease(
                    self.pool, row.token_key, now=now, lease_until=now + self.rules.lease
                ):
                    return await self._swap(row, resumed=True)
            if time.monotonic() >= give_up:
                raise MintUnavailable("this token is still being redeemed: try again shortly")
            await asyncio.sleep(WAIT_SECONDS)
            fresh = await cashu_db.get(self.pool, row.token_key)
            if fresh is None:  # the mint refused it to the request that held it
                raise ProofRefused("the mint refused this token. Nothing was credited")
            row = fresh

    async def _swap(self, row: cashu_db.Redemption, *, resumed: bool) -> None:
        """Swap the token for our outputs, holding the lease; on no answer, give the lease up."""
        outputs = [bdhke.Output.from_record(o) for o in row.outputs]
        messages = [o.to_message() for o in outputs]
        try:
            signatures = await self._signed_already(row, outputs) if resumed else None
            if signatures is None:
                try:
                    signatures = await self.client.swap(row.mint, row.inputs, messages)
                except MintRefused as exc:
                    # A swap of ours may have gone through a moment ago after all (its answer lost).
                    if resumed or exc.code == ALREADY_SPENT:
                        signatures = await self._signed_already(row, outputs)
                    if signatures is None:
                        reason = f"the mint refused the token: {exc.detail}"
                        await cashu_db.refuse(self.pool, row.token_key, reason, self.now())
                        log.info("cashu token refused by the mint", token=row.token_key, detail=exc.detail)
                        raise ProofRefused(f"{reason}. Nothing was credited") from None
            proofs = await self._unblinded(row, outputs, signatures)
        except NoAnswer as exc:
            log.warning(
                "cashu swap without an answer; kept for the next attempt", token=row.token_key, error=str(exc)
            )
            await asyncio.shield(cashu_db.release(self.pool, row.token_key, self.now()))
            raise MintUnavailable(
                "the mint did not answer: send the same request again with the same token (it is not lost)"
            ) from None
        except BaseException:
            await asyncio.shield(cashu_db.release(self.pool, row.token_key, self.now()))
            raise
        await cashu_db.swapped(self.pool, row.token_key, proofs)
        if not await self._credit(row.token_key):
            raise ProofRefused("this token has already been spent here")

    async def _signed_already(
        self, row: cashu_db.Redemption, outputs: list[bdhke.Output]
    ) -> list[dict[str, Any]] | None:
        """The mint's signatures for our outputs if it gave them (a swap whose answer was lost). A mint
        that will not say is no answer: the outcome stays unknown, and the token kept."""
        try:
            found = await self.client.restore(row.mint, [o.to_message() for o in outputs])
        except MintRefused as exc:
            raise NoAnswer(f"the mint refused to restore: {exc.detail}") from None
        signed = [found.get(o.b_) for o in outputs]
        if all(s is not None for s in signed):
            log.info("cashu swap recovered from the mint", token=row.token_key)
            return [s for s in signed if s is not None]
        if any(s is not None for s in signed):
            raise NoAnswer("the mint signed only some of the outputs")
        return None

    async def _unblinded(
        self, row: cashu_db.Redemption, outputs: list[bdhke.Output], signatures: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        keys: dict[str, dict[int, str]] = {}
        proofs = []
        for output, signature in zip(outputs, signatures, strict=True):
            if signature["amount"] != output.amount or signature["id"] != output.keyset_id:
                raise NoAnswer("a signature is not for the output it answers")
            if output.keyset_id not in keys:
                keys[output.keyset_id] = await self.client.keys(row.mint, output.keyset_id)
            mint_key = keys[output.keyset_id].get(output.amount)
            if mint_key is None:
                raise NoAnswer(f"the keyset has no key for {output.amount}")
            try:
                c = bdhke.unblind(signature["C_"], output.r, mint_key)
            except bdhke.BadPoint as exc:
                raise NoAnswer(str(exc)) from None
            proofs.append({"amount": output.amount, "id": output.keyset_id, "secret": output.secret, "C": c})
        return proofs

    async def _credit(self, token_key: str) -> bool:
        """swapped -> credited: the offer paid with a receipt, the account credited, in one
        transaction; False if another request did it."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await cashu_db.lock_swapped(conn, token_key)
            if row is None:
                return False
            offer = await offers.get(conn, row.offer_id)
            assert offer is not None and offer.payment is not None
            paid_at = self.now()
            received_msat = (row.amount_sat - row.fee_sat) * 1000
            receipt = make_receipt(
                self.service_key,
                buyer=offer.pubkey,
                offer_id=offer.id,
                payment_raw=offer.payment,
                bolt11=None,
                preimage=None,
                paid_at=int(paid_at.timestamp()),
                cashu_mint=row.mint,
                amount_msat=received_msat,
            )
            if not await offers.mark_paid_by_cashu(
                conn, offer.id, amount_received_msat=received_msat, receipt=receipt.to_dict(), paid_at=paid_at
            ):
                log.error(
                    "cashu offer not payable; token kept, nothing credited", offer=offer.id, token=token_key
                )
                return False
            await credit_account(conn, offer.pubkey, offer.gb_months, paid_at, policy=self.policy)
            await cashu_db.mark_credited(conn, token_key, paid_at)
        log.info(
            "storage purchased",
            flow="cashu",
            offer=offer.id,
            pubkey=offer.pubkey,
            gb_months=offer.gb_months,
            msat=received_msat,
            receipt=receipt.id,
        )
        return True
