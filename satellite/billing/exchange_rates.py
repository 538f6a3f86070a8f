"""BTC/USD from public providers, combined around the median and cached: what live pricing converts USD
prices with.

Several providers are queried together; their answers are combined around the median so one wrong or
compromised provider cannot move the price (`pricing.combine`). The result is cached for a TTL, and a
cached rate stays usable for a further "stale" window when every provider is failing; past that, no rate
is known and `RateUnavailable` is raised (the API answers 503). Provider JSON is parsed with
`parse_float=Decimal`: money is never a float.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar

import aiohttp
import structlog

from satellite.billing.pricing import DEFAULT_MAX_DEVIATION, combine, sats_per_usd_from_btc_usd
from satellite.config import ConfigError
from satellite.errors import RateUnavailable

log = structlog.get_logger("satellite.exchange_rates")

# A provider answer outside this range (USD per BTC) is treated as that provider failing.
MIN_BTC_USD = Decimal(100)
MAX_BTC_USD = Decimal(10**8)


class ProviderError(Exception):
    """One provider answered with something we cannot use (bad shape, error flag, absurd number)."""


# --- providers ----------------------------------------------------------------------------------------------


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
