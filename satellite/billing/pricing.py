"""Prices: a GB-month priced in USD, converted to sats with a BTC/USD rate, or a fixed sats price.

The rate comes from several public providers queried together; their answers are combined around the
median so one wrong or compromised provider cannot move the price. The result is cached for a TTL, and a
cached rate stays usable for a further "stale" window when every provider is failing; past that, no rate
is known and `RateUnavailable` is raised (the API answers 503). Money is Decimal or integer, never float:
provider JSON is parsed with `parse_float=Decimal`.

Everything here takes what it needs as arguments (the HTTP session, the clock): nothing reads settings
except `build_pricing`, and nothing happens at import time.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, ClassVar

import aiohttp
import structlog

from satellite.config import ConfigError
from satellite.errors import RateUnavailable  # no usable BTC/USD rate: every provider failed, cache too old

__all__ = ["RateUnavailable"]

if TYPE_CHECKING:
    from satellite.config import Settings

log = structlog.get_logger("satellite.pricing")

SATS_PER_BTC = 10**8
MSAT_PER_SAT = 1000
DEFAULT_MAX_DEVIATION = Decimal("0.05")
# A provider answer outside this range (USD per BTC) is treated as that provider failing.
MIN_BTC_USD = Decimal(100)
MAX_BTC_USD = Decimal(10**8)


class ProviderError(Exception):
    """One provider answered with something we cannot use (bad shape, error flag, absurd number)."""


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


# --- providers -------------------------------------------------------------------------------------------


def _no_constants(name: str) -> Any:
    raise ValueError(f"non-finite number {name} in JSON")


def _loads(text: str) -> Any:
    # JSON numbers become Decimal (never float); NaN/Infinity are refused.
    return json.loads(text, parse_float=Decimal, parse_constant=_no_constants)


def _price(value: object) -> Decimal:
    """A provider's BTC/USD number (a string or a JSON number) checked to be sane."""
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise ProviderError(f"price is not a number: {value!r}")
    try:
        price = Decimal(str(value).strip())
    except InvalidOperation:
        raise ProviderError(f"price is not a number: {value!r}") from None
    if not price.is_finite() or not (MIN_BTC_USD <= price <= MAX_BTC_USD):
        raise ProviderError(f"implausible BTC/USD price: {value!r}")
    return price


class Provider:
    """A public BTC/USD source: one GET returning JSON, one number picked out of it."""

    name: ClassVar[str]
    default_base_url: ClassVar[str]
    path: ClassVar[str]
    params: ClassVar[dict[str, str]] = {}

    def __init__(self, base_url: str | None = None) -> None:
        self.base_url = (base_url or self.default_base_url).rstrip("/")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url!r})"

    @property
    def url(self) -> str:
        return self.base_url + self.path

    def parse(self, body: Any) -> object:
        """The price value (string or number) in a decoded response; KeyError/TypeError etc. on bad shape."""
        raise NotImplementedError

    async def btc_usd(self, session: aiohttp.ClientSession, timeout: float) -> Decimal:  # noqa: ASYNC109
        """USD per BTC. Raises ProviderError, aiohttp.ClientError or TimeoutError on failure."""
        async with session.get(
            self.url,
            params=self.params,
            headers={"Accept": "application/json"},
            timeout=aiohttp.ClientTimeout(total=timeout),
            allow_redirects=False,
        ) as resp:
            resp.raise_for_status()
            text = await resp.text()
        try:
            body = _loads(text)
            value = self.parse(body)
        except (ValueError, LookupError, TypeError, AttributeError) as exc:
            raise ProviderError(f"unexpected response: {exc!r}") from None
        return _price(value)


class Coinbase(Provider):
    # GET /v2/prices/BTC-USD/spot -> {"data": {"amount": "97000.12", "base": "BTC", "currency": "USD"}}
    name = "coinbase"
    default_base_url = "https://api.coinbase.com"
    path = "/v2/prices/BTC-USD/spot"

    def parse(self, body: Any) -> object:
        data = body["data"]
        if data.get("currency", "USD") != "USD" or data.get("base", "BTC") != "BTC":
            raise ProviderError(f"not a BTC-USD price: {data.get('base')}-{data.get('currency')}")
        return data["amount"]


class Kraken(Provider):
    # GET /0/public/Ticker?pair=XBTUSD -> {"error": [], "result": {"XXBTZUSD": {"c": ["97000.1", "0.001"]}}}
    # "c" is the last trade closed: [price, lot volume].
    name = "kraken"
    default_base_url = "https://api.kraken.com"
    path = "/0/public/Ticker"
    params: ClassVar[dict[str, str]] = {"pair": "XBTUSD"}

    def parse(self, body: Any) -> object:
        if body.get("error"):
            raise ProviderError(f"kraken error: {body['error']}")
        result = body["result"]
        if "XXBTZUSD" in result:
            ticker = result["XXBTZUSD"]
        elif len(result) == 1:  # the one pair asked for, under another spelling
            ticker = next(iter(result.values()))
        else:
            raise ProviderError("no XXBTZUSD ticker in the response")
        return ticker["c"][0]


class Bitstamp(Provider):
    # GET /api/v2/ticker/btcusd/ -> {"last": "97000", "bid": ..., "ask": ..., "timestamp": ..., ...}
    name = "bitstamp"
    default_base_url = "https://www.bitstamp.net"
    path = "/api/v2/ticker/btcusd/"

    def parse(self, body: Any) -> object:
        return body["last"]


class CoinGecko(Provider):
    # GET /api/v3/simple/price?ids=bitcoin&vs_currencies=usd -> {"bitcoin": {"usd": 97000}} (a JSON number)
    name = "coingecko"
    default_base_url = "https://api.coingecko.com"
    path = "/api/v3/simple/price"
    params: ClassVar[dict[str, str]] = {"ids": "bitcoin", "vs_currencies": "usd"}

    def parse(self, body: Any) -> object:
        return body["bitcoin"]["usd"]


class Mempool(Provider):
    # GET /api/v1/prices -> {"time": 1700000000, "USD": 97000, "EUR": ..., ...}
    name = "mempool"
    default_base_url = "https://mempool.space"
    path = "/api/v1/prices"

    def parse(self, body: Any) -> object:
        return body["USD"]


PROVIDERS: dict[str, type[Provider]] = {
    cls.name: cls for cls in (Coinbase, Kraken, Bitstamp, CoinGecko, Mempool)
}


def make_providers(names: Sequence[str], base_urls: dict[str, str] | None = None) -> list[Provider]:
    """Providers by name (as in EXCHANGE_RATE_PROVIDERS); ValueError naming the setting on a bad list."""
    if not names:
        raise ConfigError("EXCHANGE_RATE_PROVIDERS is empty: name at least one provider")
    unknown = [n for n in names if n not in PROVIDERS]
    if unknown:
        raise ConfigError(
            f"EXCHANGE_RATE_PROVIDERS: unknown provider(s) {', '.join(unknown)}; "
            f"known: {', '.join(PROVIDERS)}"
        )
    if len(set(names)) != len(names):
        raise ConfigError("EXCHANGE_RATE_PROVIDERS names a provider twice")
    base_urls = base_urls or {}
    return [PROVIDERS[n](base_urls.get(n)) for n in names]


# --- the cached, combined rate ---------------------------------------------------------------------------


class ExchangeRates:
    """Sats per USD from several providers, cached for `ttl` s, usable up to `ttl + stale` s old.

    Concurrent callers share one refresh. After a failed refresh the providers are left alone for
    `retry_after` seconds (callers get the stale rate, or RateUnavailable at once).
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        providers: Sequence[Provider],
        *,
        timeout: float,
        ttl: float,
        stale: float,
        clock: Callable[[], float] = time.time,
        max_deviation: Decimal = DEFAULT_MAX_DEVIATION,
        retry_after: float | None = None,
    ) -> None:
        if not providers:
            raise ValueError("at least one exchange-rate provider is needed")
        self._session = session
        self._providers = list(providers)
        self._timeout = timeout
        self._ttl = ttl
        self._stale = stale
        self._clock = clock
        self._max_deviation = max_deviation
        self._retry_after = min(ttl, 10.0) if retry_after is None else retry_after
        self._value: Decimal | None = None
        self._fetched_at = -math.inf
        self._next_attempt = -math.inf
        self._refresh: asyncio.Task[Decimal | None] | None = None

    @property
    def providers(self) -> list[Provider]:
        return list(self._providers)

    def last_known(self) -> Decimal | None:
        """The cached rate if still usable (younger than ttl + stale); no network."""
        if self._value is not None and self._clock() - self._fetched_at < self._ttl + self._stale:
            return self._value
        return None

    async def sats_per_usd(self) -> Decimal:
        if self._value is not None and self._clock() - self._fetched_at < self._ttl:
            return self._value
        if self._refresh is None or self._refresh.done():
            if self._clock() < self._next_attempt:
                return self._fallback()
            self._refresh = asyncio.create_task(self._fetch(), name="exchange-rate-refresh")
        # shield: a caller that gives up (cancelled) does not cancel the refresh others wait on.
        value = await asyncio.shield(self._refresh)
        return value if value is not None else self._fallback()

    async def close(self) -> None:
        """Cancel a refresh in flight (at shutdown, before the session closes)."""
        task, self._refresh = self._refresh, None
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    def _fallback(self) -> Decimal:
        value = self.last_known()
        if value is None:
            raise RateUnavailable("no BTC/USD exchange rate is known")
        log.warning(
            "serving a stale exchange rate",
            sats_per_usd=str(value),
            age_seconds=round(self._clock() - self._fetched_at),
        )
        return value

    async def _fetch(self) -> Decimal | None:
        """One round of provider requests; the new rate, or None (and a warning) if no rate came of it."""
        answers = await asyncio.gather(*(self._ask(p) for p in self._providers))
        prices = [a for a in answers if a is not None]
        try:
            btc_usd = combine(prices, self._max_deviation)
        except RateUnavailable as exc:
            self._next_attempt = self._clock() + self._retry_after
            log.warning(
                "exchange rate refresh failed",
                reason=str(exc),
                answered=len(prices),
                providers=len(self._providers),
            )
            return None
        value = sats_per_usd_from_btc_usd(btc_usd)
        self._value, self._fetched_at = value, self._clock()
        log.debug(
            "exchange rate refreshed",
            btc_usd=str(btc_usd),
            sats_per_usd=str(value),
            answered=len(prices),
            providers=len(self._providers),
        )
        return value

    async def _ask(self, provider: Provider) -> Decimal | None:
        try:
            return await asyncio.wait_for(provider.btc_usd(self._session, self._timeout), self._timeout)
        except TimeoutError:
            log.warning("exchange rate provider failed", provider=provider.name, error="timeout")
        except aiohttp.ClientResponseError as exc:
            log.warning("exchange rate provider failed", provider=provider.name, error=f"HTTP {exc.status}")
        except (aiohttp.ClientError, ProviderError) as exc:
            log.warning("exchange rate provider failed", provider=provider.name, error=repr(exc))
        except Exception as exc:  # a provider must never take pricing down with it
            log.warning(
                "exchange rate provider failed", provider=provider.name, error=repr(exc), exc_info=True
            )
        return None


# --- what the API uses -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Quote:
    amount_msat: int
    rate_usd: Decimal
    sats_per_usd: Decimal


class Pricing:
    """The price of storage: `Pricing.fixed(...)` (no network) or `Pricing.live(...)` (exchange rates)."""

    def __init__(
        self,
        *,
        rate_usd: Decimal,
        sats_per_gb_month: int | None = None,
        exchange_rates: ExchangeRates | None = None,
    ) -> None:
        if (sats_per_gb_month is None) == (exchange_rates is None):
            raise ValueError("give either sats_per_gb_month or exchange_rates")
        if not (rate_usd.is_finite() and rate_usd > 0):
            raise ValueError("rate_usd must be a positive number")
        if sats_per_gb_month is not None and sats_per_gb_month < 1:
            raise ValueError("sats_per_gb_month must be at least 1")
        self.rate_usd = rate_usd
        self.sats_per_gb_month = sats_per_gb_month
        self.exchange_rates = exchange_rates

    @classmethod
    def fixed(cls, sats_per_gb_month: int, rate_usd: Decimal) -> Pricing:
        return cls(rate_usd=rate_usd, sats_per_gb_month=sats_per_gb_month)

    @classmethod
    def live(cls, exchange_rates: ExchangeRates, rate_usd: Decimal) -> Pricing:
        return cls(rate_usd=rate_usd, exchange_rates=exchange_rates)

    @property
    def is_live(self) -> bool:
        return self.exchange_rates is not None

    async def quote(self, gb_months: int) -> Quote:
        """The price of `gb_months` GB-months; RateUnavailable when live and no rate is known."""
        if self.sats_per_gb_month is not None:
            return Quote(
                amount_msat=fixed_amount_msat(sats_per_gb_month=self.sats_per_gb_month, gb_months=gb_months),
                rate_usd=self.rate_usd,
                sats_per_usd=_tidy(Decimal(self.sats_per_gb_month) / self.rate_usd),
            )
        assert self.exchange_rates is not None
        if gb_months < 1:
            raise ValueError("gb_months must be at least 1")
        sats_per_usd = await self.exchange_rates.sats_per_usd()
        return Quote(
            amount_msat=amount_msat(sats_per_usd=sats_per_usd, gb_months=gb_months, rate_usd=self.rate_usd),
            rate_usd=self.rate_usd,
            sats_per_usd=sats_per_usd,
        )

    def display_sats_per_usd(self) -> Decimal | None:
        """Sats per USD for display (`exchangeFiat.usd`), without touching the network."""
        if self.sats_per_gb_month is not None:
            return _tidy(Decimal(self.sats_per_gb_month) / self.rate_usd)
        assert self.exchange_rates is not None
        return self.exchange_rates.last_known()


def build_pricing(
    settings: Settings,
    session: aiohttp.ClientSession | None,
    *,
    clock: Callable[[], float] = time.time,
) -> Pricing:
    """Pricing from settings: a fixed sats price if PRICE_SATS_PER_GB_MONTH > 0, else live rates.

    The caller owns `session` (opened and closed in the app's cleanup context); it may be None only for
    fixed pricing. With live rates, call `pricing.exchange_rates.close()` before closing the session.
    """
    rate_usd = settings.rate_usd_per_gb_month
    if settings.price_sats_per_gb_month > 0:
        return Pricing.fixed(settings.price_sats_per_gb_month, rate_usd)
    # Each entry is a provider name, optionally with its own base URL (a mirror or proxy): name=url.
    entries = [entry.partition("=") for entry in settings.provider_list]
    providers = make_providers(
        [name.strip() for name, _, _ in entries],
        {name.strip(): url.strip() for name, _, url in entries if url},
    )
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
    return Pricing.live(rates, rate_usd)
