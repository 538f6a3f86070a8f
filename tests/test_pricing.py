"""Pricing: exact amounts, an outlier-proof BTC/USD rate, and exchange rates from local fake providers.

The fake providers are real HTTP servers on 127.0.0.1 answering in each provider's documented shape;
nothing here touches the internet. Time is moved with an injected clock, not sleeps.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import Counter
from collections.abc import Callable
from decimal import Decimal

import aiohttp
import pytest
from aiohttp import web
from billing_helpers import wait_for
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from satellite.billing.exchange_rates import PROVIDERS, ExchangeRates, ProviderError, make_providers
from satellite.billing.pricing import (
    FixedPrice,
    LivePrice,
    Quote,
    RateUnavailable,
    amount_msat,
    build_price,
    check_settings,
    combine,
    fixed_amount_msat,
    sats_per_usd_from_btc_usd,
)
from satellite.config import Settings

FAST = settings(max_examples=200, deadline=None)
FOUR = ("coinbase", "kraken", "bitstamp", "coingecko")


def _decimals(low: str, high: str, places: int) -> st.SearchStrategy[Decimal]:
    return st.decimals(
        min_value=Decimal(low), max_value=Decimal(high), places=places, allow_nan=False, allow_infinity=False
    )


sats_per_usd_values = _decimals("0.5", "1000000", 6)
usd_rates = _decimals("0.0001", "100", 4)
gb_months_values = st.integers(min_value=1, max_value=100_000)
btc_prices = _decimals("1000", "1000000", 2)


# --- amount_msat -----------------------------------------------------------------------------------------


@FAST
@given(sats_per_usd_values, gb_months_values, usd_rates)
def test_amount_is_whole_sats_in_msat(sats_per_usd, gb_months, rate):
    amount = amount_msat(sats_per_usd=sats_per_usd, gb_months=gb_months, rate_usd=rate)
    assert type(amount) is int
    assert amount % 1000 == 0
    assert amount >= 1000
    exact = sats_per_usd * gb_months * rate
    assert abs(Decimal(amount // 1000) - exact) <= Decimal("0.5") or amount == 1000


@FAST
@given(sats_per_usd_values, gb_months_values, gb_months_values, usd_rates)
def test_amount_is_monotone_in_gb_months(sats_per_usd, a, b, rate):
    low, high = sorted((a, b))
    assert amount_msat(sats_per_usd=sats_per_usd, gb_months=low, rate_usd=rate) <= amount_msat(
        sats_per_usd=sats_per_usd, gb_months=high, rate_usd=rate
    )


@FAST
@given(sats_per_usd_values, gb_months_values, usd_rates, usd_rates)
def test_amount_is_monotone_in_rate(sats_per_usd, gb_months, a, b):
    low, high = sorted((a, b))
    assert amount_msat(sats_per_usd=sats_per_usd, gb_months=gb_months, rate_usd=low) <= amount_msat(
        sats_per_usd=sats_per_usd, gb_months=gb_months, rate_usd=high
    )


@FAST
@given(sats_per_usd_values, sats_per_usd_values, gb_months_values, usd_rates)
def test_amount_is_monotone_in_sats_per_usd(a, b, gb_months, rate):
    low, high = sorted((a, b))
    assert amount_msat(sats_per_usd=low, gb_months=gb_months, rate_usd=rate) <= amount_msat(
        sats_per_usd=high, gb_months=gb_months, rate_usd=rate
    )


@pytest.mark.parametrize(
    ("sats_per_usd", "gb_months", "rate", "expected"),
    [
        ("1000", 3, "0.05", 150_000),  # 1000 sats/USD x 3 x $0.05 = 150 sats
        ("50", 1, "0.05", 3_000),  # 2.5 sats rounds half up to 3 (not to even)
        ("30", 1, "0.05", 2_000),  # 1.5 -> 2
        ("29.9", 1, "0.05", 1_000),  # 1.495 -> 1
        ("1", 1, "0.0001", 1_000),  # 0.0001 sats: still at least one sat
        ("1030.926559678482871979952190", 120, "0.05", 6_186_000),  # 6185.56 -> 6186
    ],
)
def test_amount_examples(sats_per_usd, gb_months, rate, expected):
    assert amount_msat(sats_per_usd=Decimal(sats_per_usd), gb_months=gb_months, rate_usd=Decimal(rate)) == (
        expected
    )


def test_amount_refuses_nonsense():
    with pytest.raises(ValueError):
        amount_msat(sats_per_usd=Decimal(1000), gb_months=0, rate_usd=Decimal("0.05"))
    with pytest.raises(ValueError):
        amount_msat(sats_per_usd=Decimal("NaN"), gb_months=1, rate_usd=Decimal("0.05"))
    with pytest.raises(ValueError):
        amount_msat(sats_per_usd=Decimal(1000), gb_months=1, rate_usd=Decimal(0))


def test_fixed_amount_and_sats_per_usd():
    assert fixed_amount_msat(sats_per_gb_month=50, gb_months=3) == 150_000
    with pytest.raises(ValueError):
        fixed_amount_msat(sats_per_gb_month=50, gb_months=0)
    assert sats_per_usd_from_btc_usd(Decimal(100_000)) == Decimal(1000)
    assert str(sats_per_usd_from_btc_usd(Decimal(100_000))) == "1000"
    assert sats_per_usd_from_btc_usd(Decimal("97000.12")) == Decimal("1030.926559678482871979952190")
    with pytest.raises(ValueError):
        sats_per_usd_from_btc_usd(Decimal(0))


# --- combine ---------------------------------------------------------------------------------------------


def _combine_or_none(prices):
    try:
        return combine(prices)
    except RateUnavailable:
        return None


@FAST
@given(st.lists(btc_prices, min_size=1, max_size=9))
def test_combined_price_lies_within_the_answers(prices):
    result = _combine_or_none(prices)
    if len(prices) % 2:
        assert result is not None  # with an odd count the median is an answer, and always survives
    if result is not None:
        assert min(prices) <= result <= max(prices)


@FAST
@given(
    st.lists(btc_prices, min_size=1, max_size=7).flatmap(
        lambda xs: st.tuples(st.just(xs), st.permutations(xs))
    )
)
def test_combine_ignores_order(pair):
    prices, shuffled = pair
    assert _combine_or_none(prices) == _combine_or_none(list(shuffled))


wild_factors = st.one_of(_decimals("0.0001", "0.5", 4), _decimals("1.5", "1000", 4))


@FAST
@given(
    base=_decimals("1000", "500000", 2),
    offsets=st.lists(_decimals("0", "0.02", 4), min_size=3, max_size=7),
    wild=wild_factors,
    where=st.integers(min_value=0, max_value=7),
)
def test_one_wild_provider_cannot_move_the_price(base, offsets, wild, where):
    honest = [base * (1 + f) for f in offsets]
    prices = list(honest)
    prices.insert(where % (len(prices) + 1), base * wild)
    result = combine(prices)
    assert min(honest) <= result <= max(honest)
    assert result == combine(honest)  # as if the wild one had not answered at all


def test_combine_examples():
    d = Decimal
    assert combine([d(97000)]) == d(97000)
    assert combine([d(97000), d(97100), d(970000)]) == d(97050)  # the liar is dropped
    assert combine([d(97000), d(98000)]) == d(97500)  # two that agree
    assert combine([d(97000), d(97100), d(96900), d(9700)]) == d(97000)
    with pytest.raises(RateUnavailable):
        combine([])
    with pytest.raises(RateUnavailable):  # two that disagree: which one lies?
        combine([d(97000), d(970000)])
    with pytest.raises(RateUnavailable):
        combine([d(97000), d(97000) * d("1.06")])
    with pytest.raises(RateUnavailable):  # no majority anywhere near the median
        combine([d(10000), d(20000), d(500000), d(900000)])


# --- fake providers --------------------------------------------------------------------------------------


def _coinbase(request: web.Request, price: Decimal) -> str:
    return f'{{"data": {{"amount": "{price}", "base": "BTC", "currency": "USD"}}}}'


def _kraken(request: web.Request, price: Decimal) -> str:
    if request.query.get("pair") != "XBTUSD":
        return '{"error": ["EQuery:Unknown asset pair"]}'
    return (
        '{"error": [], "result": {"XXBTZUSD": {'
        f'"a": ["{price + 1}", "1", "1.000"], "b": ["{price - 1}", "1", "1.000"], '
        f'"c": ["{price}", "0.00067643"], "v": ["4083.67001100", "4412.73601799"], '
        f'"p": ["{price}", "{price}"], "t": [34619, 38907], "l": ["{price - 500}", "{price - 500}"], '
        f'"h": ["{price + 500}", "{price + 500}"], "o": "{price - 100}"}}}}}}'
    )


def _bitstamp(request: web.Request, price: Decimal) -> str:
    return (
        f'{{"timestamp": "1700000000", "open": "{price - 100}", "high": "{price + 500}", '
        f'"low": "{price - 500}", "last": "{price}", "volume": "1567.15645338", "vwap": "{price}", '
        f'"bid": "{price - 1}", "ask": "{price + 1}", "side": "0", "open_24": "{price - 200}", '
        '"percent_change_24": "0.21"}'
    )


def _coingecko(request: web.Request, price: Decimal) -> str:
    if request.query.get("ids") != "bitcoin" or request.query.get("vs_currencies") != "usd":
        return "{}"
    return f'{{"bitcoin": {{"usd": {price}}}}}'  # a JSON number, not a string


def _mempool(request: web.Request, price: Decimal) -> str:
    return f'{{"time": 1700000000, "USD": {price}, "EUR": {price - 5000}, "GBP": {price - 20000}}}'


SHAPES: dict[str, tuple[str, Callable[[web.Request, Decimal], str]]] = {
    "coinbase": ("/v2/prices/BTC-USD/spot", _coinbase),
    "kraken": ("/0/public/Ticker", _kraken),
    "bitstamp": ("/api/v2/ticker/btcusd/", _bitstamp),
    "coingecko": ("/api/v3/simple/price", _coingecko),
    "mempool": ("/api/v1/prices", _mempool),
}


class FakeExchanges:
    """All five providers' endpoints on one local server; per provider a price and a behaviour."""

    def __init__(self) -> None:
        self.price = {name: Decimal("97000") for name in SHAPES}
        self.mode = {name: "ok" for name in SHAPES}  # ok | down | slow | garbage
        self.raw: dict[str, str] = {}  # a body to send instead of the documented one
        self.delay = 0.0
        self.hits: Counter[str] = Counter()
        self.release = asyncio.Event()  # lets "slow" handlers finish at teardown
        self.base_url = ""
        self.app = web.Application()
        for name, (path, _) in SHAPES.items():
            self.app.router.add_get(path, self._handler(name))

    def _handler(self, name: str) -> Callable[[web.Request], object]:
        async def handle(request: web.Request) -> web.Response:
            self.hits[name] += 1
            if self.delay:
                await asyncio.sleep(self.delay)
            mode = self.mode[name]
            if mode == "slow":
                await self.release.wait()
            if mode == "down":
                return web.Response(status=503, text="down for maintenance")
            if mode == "garbage":
                return web.Response(text="<html>rate limited</html>", content_type="text/html")
            body = self.raw.get(name) or SHAPES[name][1](request, self.price[name])
            return web.Response(text=body, content_type="application/json")

        return handle

    def set_all(self, mode: str) -> None:
        for name in self.mode:
            self.mode[name] = mode

    def providers(self, names=FOUR):
        return make_providers(list(names), {n: self.base_url for n in names})


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
async def exchanges(aiohttp_server):
    fake = FakeExchanges()
    server = await aiohttp_server(fake.app, host="127.0.0.1")
    fake.base_url = str(server.make_url("")).rstrip("/")
    yield fake
    fake.release.set()


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def clock() -> Clock:
    return Clock()


def _rates(exchanges, session, clock, names=FOUR, *, timeout=2.0, ttl=60, stale=900) -> ExchangeRates:
    return ExchangeRates(
        session, exchanges.providers(names), timeout=timeout, ttl=ttl, stale=stale, clock=clock
    )


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _failures(logs):
    return {e["provider"]: e["error"] for e in logs if e["event"] == "exchange rate provider failed"}


# --- providers, one by one -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PROVIDERS))
async def test_each_provider_reads_its_documented_shape(exchanges, session, name):
    exchanges.price[name] = Decimal("97123.45")
    (provider,) = exchanges.providers([name])
    assert provider.name == name
    price = await provider.btc_usd(session, 2.0)
    assert price == Decimal("97123.45") and isinstance(price, Decimal)
    assert exchanges.hits[name] == 1


BAD_ANSWERS = [
    ("coinbase", '{"data": {"amount": "97000", "base": "BTC", "currency": "EUR"}}'),
    ("coinbase", '{"errors": [{"id": "not_found", "message": "Invalid currency"}]}'),
    ("kraken", '{"error": ["EService:Unavailable"]}'),
    ("kraken", '{"error": [], "result": {}}'),
    ("bitstamp", '{"last": "NaN"}'),
    ("bitstamp", '{"last": "-97000"}'),
    ("bitstamp", '{"last": "0"}'),
    ("bitstamp", '{"last": "12.5"}'),  # absurdly low
    ("bitstamp", '{"last": "97,000"}'),
    ("coingecko", '{"bitcoin": {"usd": 1e12}}'),  # absurdly high
    ("coingecko", '{"bitcoin": {"usd": NaN}}'),
    ("coingecko", '{"bitcoin": {"usd": true}}'),
    ("coingecko", '{"status": {"error_code": 429, "error_message": "rate limited"}}'),
    ("mempool", "not json at all"),
    ("mempool", "[97000]"),
]


@pytest.mark.parametrize(("name", "body"), BAD_ANSWERS)
async def test_unusable_answers_are_provider_errors(exchanges, session, name, body):
    exchanges.raw[name] = body
    (provider,) = exchanges.providers([name])
    with pytest.raises(ProviderError):
        await provider.btc_usd(session, 2.0)


async def test_http_errors_are_client_errors(exchanges, session):
    exchanges.mode["bitstamp"] = "down"
    (provider,) = exchanges.providers(["bitstamp"])
    with pytest.raises(aiohttp.ClientResponseError):
        await provider.btc_usd(session, 2.0)


# --- ExchangeRates ---------------------------------------------------------------------------------------


async def test_all_agree(exchanges, session, clock):
    for name, price in zip(FOUR, ("97000", "97010", "96990", "97005"), strict=True):
        exchanges.price[name] = Decimal(price)
    rates = _rates(exchanges, session, clock)
    assert rates.last_known() is None
    value = await rates.sats_per_usd()
    assert value == sats_per_usd_from_btc_usd(Decimal("97002.5"))
    assert rates.last_known() == value
    assert all(exchanges.hits[n] == 1 for n in FOUR)


async def test_a_liar_is_dropped(exchanges, session, clock):
    exchanges.price.update(
        coinbase=Decimal("970000"),
        kraken=Decimal("97000"),
        bitstamp=Decimal("97100"),
        coingecko=Decimal("96950"),
    )
    rates = _rates(exchanges, session, clock)
    assert await rates.sats_per_usd() == sats_per_usd_from_btc_usd(Decimal("97000"))


async def test_a_slow_provider_does_not_hold_up_the_answer(exchanges, session, clock):
    exchanges.mode["kraken"] = "slow"  # never answers until the test ends
    exchanges.price.update(coinbase=Decimal("97000"), bitstamp=Decimal("97200"), coingecko=Decimal("97100"))
    rates = _rates(exchanges, session, clock, timeout=0.3)
    started = time.monotonic()
    with capture_logs() as logs:
        value = await rates.sats_per_usd()
    assert time.monotonic() - started < 2.0
    assert value == sats_per_usd_from_btc_usd(Decimal("97100"))
    assert _failures(logs) == {"kraken": "timeout"}


async def test_all_down_is_rate_unavailable(exchanges, session, clock):
    exchanges.mode.update(coinbase="down", kraken="garbage")
    exchanges.raw["bitstamp"] = '{"last": "0.01"}'
    providers = exchanges.providers(("coinbase", "kraken", "bitstamp"))
    providers += make_providers(["coingecko"], {"coingecko": f"http://127.0.0.1:{_unused_port()}"})
    rates = ExchangeRates(session, providers, timeout=2.0, ttl=60, stale=900, clock=clock)
    with capture_logs() as logs, pytest.raises(RateUnavailable):
        await rates.sats_per_usd()
    failures = _failures(logs)
    assert set(failures) == set(FOUR)
    assert failures["coinbase"] == "HTTP 503"
    assert rates.last_known() is None
    assert any(e["event"] == "exchange rate refresh failed" and e["log_level"] == "warning" for e in logs)


async def test_a_cached_rate_is_used_within_the_ttl(exchanges, session, clock):
    rates = _rates(exchanges, session, clock, ttl=60)
    first = await rates.sats_per_usd()
    assert sum(exchanges.hits.values()) == 4
    clock.advance(59)
    exchanges.price.update(dict.fromkeys(FOUR, Decimal("100000")))
    assert await rates.sats_per_usd() == first
    assert sum(exchanges.hits.values()) == 4  # no new requests
    clock.advance(2)
    assert await rates.sats_per_usd() == Decimal(1000)
    assert sum(exchanges.hits.values()) == 8


async def test_a_stale_rate_is_served_until_ttl_plus_stale(exchanges, session, clock):
    rates = _rates(exchanges, session, clock, ttl=60, stale=900)
    start = clock.now
    value = await rates.sats_per_usd()
    exchanges.set_all("down")

    clock.advance(61)
    with capture_logs() as logs:
        assert await rates.sats_per_usd() == value
    assert any(e["event"] == "serving a stale exchange rate" and e["log_level"] == "warning" for e in logs)
    assert sum(exchanges.hits.values()) == 8  # one failed round

    clock.advance(5)  # failed recently: the providers are left alone for a while
    assert await rates.sats_per_usd() == value
    assert sum(exchanges.hits.values()) == 8

    clock.now = start + 959
    assert await rates.sats_per_usd() == value
    assert rates.last_known() == value
    assert sum(exchanges.hits.values()) == 12

    clock.now = start + 961
    with pytest.raises(RateUnavailable):
        await rates.sats_per_usd()
    assert rates.last_known() is None

    exchanges.set_all("ok")
    exchanges.price.update(dict.fromkeys(FOUR, Decimal("100000")))
    clock.advance(11)
    assert await rates.sats_per_usd() == Decimal(1000)


async def test_concurrent_callers_share_one_round_of_requests(exchanges, session, clock):
    exchanges.delay = 0.05
    rates = _rates(exchanges, session, clock)
    values = await asyncio.gather(*(rates.sats_per_usd() for _ in range(25)))
    assert len(set(values)) == 1
    assert all(exchanges.hits[n] == 1 for n in FOUR)
    clock.advance(61)
    await asyncio.gather(*(rates.sats_per_usd() for _ in range(25)))
    assert all(exchanges.hits[n] == 2 for n in FOUR)


async def test_a_caller_giving_up_does_not_cancel_the_shared_refresh(exchanges, session, clock):
    exchanges.delay = 0.1
    rates = _rates(exchanges, session, clock)
    impatient = asyncio.create_task(asyncio.wait_for(rates.sats_per_usd(), 0.02))
    patient = asyncio.create_task(rates.sats_per_usd())
    with pytest.raises(TimeoutError):
        await impatient
    assert await patient == sats_per_usd_from_btc_usd(Decimal(97000))
    assert all(exchanges.hits[n] == 1 for n in FOUR)


async def test_close_cancels_a_refresh_in_flight(exchanges, session, clock):
    exchanges.set_all("slow")
    rates = _rates(exchanges, session, clock, timeout=5.0)
    caller = asyncio.create_task(rates.sats_per_usd())
    await wait_for(lambda: asyncio.sleep(0, sum(exchanges.hits.values()) == len(FOUR)))  # all asked
    await rates.close()
    with pytest.raises(asyncio.CancelledError):
        await caller


# --- Pricing ---------------------------------------------------------------------------------------------


async def test_fixed_pricing_needs_no_network():
    pricing = FixedPrice(50, Decimal("0.05"))
    assert await pricing.quote(3) == Quote(
        amount_msat=150_000, rate_usd=Decimal("0.05"), sats_per_usd=Decimal(1000)
    )
    assert pricing.display_sats_per_usd() == Decimal(1000)
    assert str(pricing.display_sats_per_usd()) == "1000"
    with pytest.raises(ValueError):
        await pricing.quote(0)
    with pytest.raises(ValueError):
        FixedPrice(0, Decimal("0.05"))


async def test_live_pricing_quotes_from_the_rate(exchanges, session, clock):
    exchanges.price.update(dict.fromkeys(FOUR, Decimal("100000")))  # 1000 sats per USD
    pricing = LivePrice(_rates(exchanges, session, clock), Decimal("0.05"))
    assert pricing.display_sats_per_usd() is None  # nothing fetched yet, and display never fetches
    assert sum(exchanges.hits.values()) == 0
    quote = await pricing.quote(3)
    assert quote == Quote(amount_msat=150_000, rate_usd=Decimal("0.05"), sats_per_usd=Decimal(1000))
    assert pricing.display_sats_per_usd() == Decimal(1000)


async def test_live_pricing_without_a_rate_raises(exchanges, session, clock):
    exchanges.set_all("down")
    pricing = LivePrice(_rates(exchanges, session, clock), Decimal("0.05"))
    with pytest.raises(RateUnavailable):
        await pricing.quote(1)
    assert pricing.display_sats_per_usd() is None


async def test_build_price_from_settings(session):
    fixed = build_price(Settings(_env_file=None, price_sats_per_gb_month=21), None)
    assert isinstance(fixed, FixedPrice)
    assert (await fixed.quote(2)).amount_msat == 42_000

    live = build_price(
        Settings(_env_file=None, price_sats_per_gb_month=0, exchange_rate_providers=" kraken, mempool "),
        session,
    )
    assert isinstance(live, LivePrice) and isinstance(live.rates, ExchangeRates)
    assert [p.name for p in live.rates.providers] == ["kraken", "mempool"]
    assert live.rates.providers[0].base_url == "https://api.kraken.com"

    for bad in ("coinbase,binance", "", "kraken,kraken"):
        bad_settings = Settings(_env_file=None, price_sats_per_gb_month=0, exchange_rate_providers=bad)
        with pytest.raises(ValueError, match="EXCHANGE_RATE_PROVIDERS"):
            build_price(bad_settings, session)
        with pytest.raises(ValueError, match="EXCHANGE_RATE_PROVIDERS"):
            check_settings(bad_settings)
