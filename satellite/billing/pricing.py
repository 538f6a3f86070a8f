"""Prices: a GB-month priced in USD and converted to sats with a live BTC/USD rate (`LivePrice`), or a
fixed sats price (`FixedPrice`); both are a `Price`. The arithmetic here is pure, Decimal or integer,
never float. The rates themselves come from `satellite.billing.exchange_rates`.

Nothing reads settings except `build_price` and `check_settings`, and nothing happens at import time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Protocol

from satellite.errors import RateUnavailable  # no usable BTC/USD rate: every provider failed, cache too old

if TYPE_CHECKING:
    import aiohttp

    from satellite.config import Settings

__all__ = ["RateUnavailable"]

SATS_PER_BTC = 10**8
MSAT_PER_SAT = 1000
DEFAULT_MAX_DEVIATION = Decimal("0.05")

# --- pure arithmetic -------------------------------------------------------------------------------------


def amount_msat(*, sats_per_usd: Decimal, gb_months: int, rate_usd: Decimal) -> int:
    """round(sats_per_usd * gb_months * rate_usd) * 1000, rounding half up to whole sats, at least 1 sat."""
    if gb_months < 1:
        raise ValueError("gb_months must be at least 1")
    if not (sats_per_usd.is_finite() and sats_per_usd > 0):
        raise ValueError("sats_per_usd must be a positive number")
    if not (rate_usd.is_finite() and rate_usd > 0):
        raise ValueError("rate_usd must be a positive number")
    sats = int((sats_per_usd * gb_months * rate_usd).to_integral_value(rounding=ROUND_HALF_UP))
    return max(1, sats) * MSAT_PER_SAT


def fixed_amount_msat(*, sats_per_gb_month: int, gb_months: int) -> int:
    if gb_months < 1:
        raise ValueError("gb_months must be at least 1")
    if sats_per_gb_month < 1:
        raise ValueError("sats_per_gb_month must be at least 1")
    return sats_per_gb_month * gb_months * MSAT_PER_SAT


def _median(values: Sequence[Decimal]) -> Decimal:
    ordered = sorted(values)
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[mid]
    return (ordered[mid - 1] + ordered[mid]) / 2


def combine(prices: Sequence[Decimal], max_deviation: Decimal = DEFAULT_MAX_DEVIATION) -> Decimal:
    """One BTC/USD price from several providers' answers.

    Take the median, drop every answer more than `max_deviation` (relative) away from it, and return the
    median of the rest. With exactly two answers there is no majority: if they differ by more than
    `max_deviation` of their median we cannot tell which one is wrong, and raise.
    """
    if not prices:
        raise RateUnavailable("no exchange-rate provider answered")
    if any(not (p.is_finite() and p > 0) for p in prices):
        raise ValueError("prices must be positive numbers")
    median = _median(prices)
    bound = max_deviation * median
    if len(prices) == 2 and abs(prices[0] - prices[1]) > bound:
        raise RateUnavailable(f"the two providers that answered disagree: {prices[0]} vs {prices[1]}")
    kept = [p for p in prices if abs(p - median) <= bound]
    if not kept:
        raise RateUnavailable("exchange-rate providers disagree; no answer is near the median")
    return _median(kept)


def sats_per_usd_from_btc_usd(btc_usd: Decimal) -> Decimal:
    if not (btc_usd.is_finite() and btc_usd > 0):
        raise ValueError("btc_usd must be a positive number")
    return _tidy(Decimal(SATS_PER_BTC) / btc_usd)


def _tidy(value: Decimal) -> Decimal:
    """A whole number without an exponent (Decimal('1.0E+3') -> Decimal('1000')); others unchanged."""
    return value.quantize(Decimal(1)) if value == value.to_integral_value() else value


# --- the price the API quotes ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Quote:
    amount_msat: int
    rate_usd: Decimal
    sats_per_usd: Decimal


class Price(Protocol):
    """The price of storage, however it is set."""

    rate_usd: Decimal  # USD per GB-month, shown to clients as rateFiat.usd

    async def quote(self, gb_months: int) -> Quote:
        """The price of `gb_months` GB-months; RateUnavailable when no rate is known."""
        ...

    def display_sats_per_usd(self) -> Decimal | None:
        """Sats per USD for display (`exchangeFiat.usd`), without touching the network."""
        ...

    async def aclose(self) -> None: ...


class SatsPerUsd(Protocol):
    """A source of BTC/USD rates, as sats per USD (see `exchange_rates.ExchangeRates`)."""

    async def sats_per_usd(self) -> Decimal: ...

    def last_known(self) -> Decimal | None: ...

    async def close(self) -> None: ...


def _positive(rate_usd: Decimal) -> Decimal:
    if not (rate_usd.is_finite() and rate_usd > 0):
        raise ValueError("rate_usd must be a positive number")
    return rate_usd


class FixedPrice:
    """A fixed sats price per GB-month: no network."""

    def __init__(self, sats_per_gb_month: int, rate_usd: Decimal) -> None:
        if sats_per_gb_month < 1:
            raise ValueError("sats_per_gb_month must be at least 1")
        self.sats_per_gb_month = sats_per_gb_month
        self.rate_usd = _positive(rate_usd)

    async def quote(self, gb_months: int) -> Quote:
        return Quote(
            amount_msat=fixed_amount_msat(sats_per_gb_month=self.sats_per_gb_month, gb_months=gb_months),
            rate_usd=self.rate_usd,
            sats_per_usd=self.display_sats_per_usd(),
        )

    def display_sats_per_usd(self) -> Decimal:
        return _tidy(Decimal(self.sats_per_gb_month) / self.rate_usd)

    async def aclose(self) -> None:
        return None


class LivePrice:
    """A USD price per GB-month, converted with live exchange rates."""

    def __init__(self, rates: SatsPerUsd, rate_usd: Decimal) -> None:
        self.rates = rates
        self.rate_usd = _positive(rate_usd)

    async def quote(self, gb_months: int) -> Quote:
        if gb_months < 1:
            raise ValueError("gb_months must be at least 1")
        sats_per_usd = await self.rates.sats_per_usd()
        return Quote(
            amount_msat=amount_msat(sats_per_usd=sats_per_usd, gb_months=gb_months, rate_usd=self.rate_usd),
            rate_usd=self.rate_usd,
            sats_per_usd=sats_per_usd,
        )

    def display_sats_per_usd(self) -> Decimal | None:
        return self.rates.last_known()

    async def aclose(self) -> None:
        """Cancel a rate refresh in flight (before the HTTP session closes)."""
        await self.rates.close()


def _provider_entries(settings: Settings) -> tuple[list[str], dict[str, str]]:
    """EXCHANGE_RATE_PROVIDERS: provider names, each optionally with its own base URL (name=url)."""
    entries = [entry.partition("=") for entry in settings.provider_list]
    return [n.strip() for n, _, _ in entries], {n.strip(): url.strip() for n, _, url in entries if url}


def check_settings(settings: Settings) -> None:
    """Raise ConfigError for a price setting that cannot work (an unknown provider), creating nothing."""
    if settings.price_sats_per_gb_month == 0:
        from satellite.billing.exchange_rates import make_providers

        make_providers(*_provider_entries(settings))


def build_price(
    settings: Settings,
    session: aiohttp.ClientSession | None,
    *,
    clock: Callable[[], float] = time.time,
) -> Price:
    """A fixed sats price if PRICE_SATS_PER_GB_MONTH > 0, else the USD rate at live exchange rates.

    The caller owns `session` (it may be None only for a fixed price) and calls `aclose()` on the price
    before closing it."""
    rate_usd = settings.rate_usd_per_gb_month
    if settings.price_sats_per_gb_month > 0:
        return FixedPrice(settings.price_sats_per_gb_month, rate_usd)
    from satellite.billing.exchange_rates import ExchangeRates, make_providers

    providers = make_providers(*_provider_entries(settings))
    if session is None:
        raise ValueError("live exchange rates (PRICE_SATS_PER_GB_MONTH=0) need an HTTP session")
    rates = ExchangeRates(
        session,
        providers,
        timeout=settings.exchange_rate_timeout_seconds,
        ttl=settings.exchange_rate_ttl_seconds,
        stale=settings.exchange_rate_stale_seconds,
        clock=clock,
    )
    return LivePrice(rates, rate_usd)
