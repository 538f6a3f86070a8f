"""Shared fixtures: a real PostgreSQL database, the app over real HTTP, real keys, a movable clock."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from aiohttp.test_utils import TestServer
from aiohttp.web_runner import BaseRunner

from satellite.api.connections import ConnectionLimits, GuardedAppRunner
from satellite.app import HTTP_LIMITS, create_app
from satellite.config import Settings
from satellite.db.migrate import migrate
from satellite.nostr.keys import SecretKey

# Every table a test may fill, in an order that deletes rows before the rows they refer to.
TABLES = (
    "files",
    "credit_grants",
    "blob_images",
    "blobs",
    "accounts",
    "auth_events",
    "blocklist",
    "cashu_redemptions",
    "offers",
    "lightning_cursors",
    "dev_invoices",
    "rate_buckets",
    "upload_leases",
    "reports",
    "report_events",
    "meter_allowance",
)


class FakeClock:
    """Wall-clock time that tests can move forward, or stop."""

    def __init__(self) -> None:
        self.offset = 0.0
        self.stopped_at: float | None = None

    def __call__(self) -> float:
        return (time.time() if self.stopped_at is None else self.stopped_at) + self.offset

    def freeze(self) -> None:
        """From now on time moves only by `advance` (for tests of exact amounts)."""
        self.stopped_at = time.time()

    def advance(self, seconds: float) -> None:
        self.offset += seconds


def _with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture(scope="session")
def server_dsn() -> Iterator[str]:
    """$DATABASE_URL if set, else an embedded PostgreSQL (pgserver) in a temp dir."""
    given = os.environ.get("DATABASE_URL")
    if given:
        yield given
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver

        root = Path(tempfile.mkdtemp(prefix="satellite-pg-"))
        server = pgserver.get_server(root / "pg", cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server.cleanup()


@pytest.fixture(scope="session")
def database_url(server_dsn: str) -> Iterator[str]:
    """A fresh database for this test session, migrated once."""
    name = f"satellite_test_{secrets.token_hex(4)}"

    async def create() -> None:
        admin = await asyncpg.connect(server_dsn)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        conn = await asyncpg.connect(_with_database(server_dsn, name))
        try:
            await migrate(conn)
        finally:
            await conn.close()

    async def drop() -> None:
        admin = await asyncpg.connect(server_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()

    asyncio.run(create())
    yield _with_database(server_dsn, name)
    asyncio.run(drop())


@pytest.fixture
async def db(database_url: str):
    """A connection to the test database, emptied before each test."""
    conn = await asyncpg.connect(database_url)
    # DELETE, not TRUNCATE: a test leaves a handful of rows, which DELETE removes in a millisecond where
    # TRUNCATE takes tens (it replaces every table's files).
    await conn.execute("; ".join(f"DELETE FROM {table}" for table in TABLES))
    yield conn
    await conn.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        _env_file=None,
        database_url=database_url,
        data_dir=tmp_path / "data",
        public_url="http://cdn.test",
        max_upload_bytes=8 * 1024 * 1024,
        database_pool_size=4,
        trackers="udp://tracker.example:1337/announce,wss://tracker.example",
        # Tests of storage itself run on a free allowance; billing tests set it to 0.
        free_storage_bytes=10**12,
        price_sats_per_gb_month=50,
        settlement_poll_seconds=0.5,
        # Every test client connects from 127.0.0.1, so the per-address limits would be one budget for
        # all of a test's clients: the connection cap is off and the rates generous here; each limit is
        # tested with its own values (test_rate_limits, test_connections). Per-pubkey limits keep
        # their defaults.
        max_connections_per_ip=0,
        auth_failures_per_ip="100000/minute",
        credit_requests_per_ip="100000/minute",
        uploads_per_ip="100000/minute",
        requests_per_ip="100000/minute",
    )


class GuardedTestServer(TestServer):
    """The app behind the same connection layer as `satellite serve`."""

    def __init__(self, app, settings: Settings, **options) -> None:
        super().__init__(app, **options)
        self.limits = ConnectionLimits.from_settings(settings)

    async def _make_runner(self, **kwargs) -> BaseRunner:
        return GuardedAppRunner(self.app, self.limits, **kwargs)


@pytest.fixture
async def make_client(aiohttp_client, db, clock: FakeClock):
    """Build a test client for the app with the given settings (real HTTP on loopback). `server_options`
    go to aiohttp's TestServer: e.g. a `socket_factory` handing it a socket bound beforehand, for a test
    whose settings must name the server's own address."""

    async def make(settings: Settings, **server_options):
        server = GuardedTestServer(create_app(settings, clock=clock), settings, **server_options)
        # access_log=None as `satellite serve` runs it: aiohttp's own access log would print query strings.
        await server.start_server(access_log=None, **HTTP_LIMITS)
        return await aiohttp_client(server)

    return make


@pytest.fixture
async def client(make_client, settings: Settings):
    return await make_client(settings)


@pytest.fixture
def user() -> SecretKey:
    return SecretKey.generate()


@pytest.fixture
def examples_seen():
    """For a hypothesis test: append to it in every example; it fails the test unless hypothesis ran
    at least `want` of them (fixtures live for all the examples of one test)."""

    class Seen(list):
        want = 20

        def __repr__(self) -> str:  # hypothesis prints the fixtures of a failing example: keep it short
            return f"<{len(self)} examples>"

    seen = Seen()
    yield seen
    assert len(seen) >= seen.want, f"hypothesis ran {len(seen)} examples, fewer than {seen.want}"


# --- the dashboard: a server with its real address as PUBLIC_URL, and a browser ---


@pytest.fixture
async def served(make_client, settings: Settings):
    """A server on a port chosen before it starts, with that address as its public URL, no free
    allowance (so storage must be bought), on the dev Lightning node."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    client = await make_client(
        settings.model_copy(update={"public_url": base, "free_storage_bytes": 0}),
        socket_factory=lambda *_: sock,
    )
    return client, base


@pytest.fixture
async def browser():
    """Debian's Chromium (never a browser Playwright would download), headless."""
    from dashboard_helpers import CHROMIUM
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        launched = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        await launched.close()


@pytest.fixture
async def free(make_client, settings: Settings):
    """As `served`, with a free allowance: uploads need no purchase."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    client = await make_client(
        settings.model_copy(update={"public_url": base}), socket_factory=lambda *_: sock
    )
    return client, base


# --- Cashu: two real nutshell mints on loopback, one trusted by the server, one not ---


@pytest.fixture(scope="module")
def mints(tmp_path_factory):
    from cashu_helpers import FEE_PPK, start_mint

    trusted = start_mint(tmp_path_factory.mktemp("mint"), fee_ppk=FEE_PPK)
    untrusted = start_mint(tmp_path_factory.mktemp("other-mint"), fee_ppk=FEE_PPK)
    yield trusted, untrusted
    trusted.stop()
    untrusted.stop()


@pytest.fixture
async def paying(make_client, settings: Settings, mints):
    """A server that takes the trusted mint's tokens and gives no free allowance."""
    from cashu_helpers import cashu_settings

    return await make_client(cashu_settings(settings, mints[0].url))


@pytest.fixture
async def proxied():
    """Start a proxy (cashu_helpers.MintProxy, or a subclass) in front of a mint; each is stopped,
    its held answers let go, after the test."""
    started = []

    async def start(cls, mint_url: str):
        proxy = cls(mint_url)
        url = await proxy.start()
        started.append(proxy)
        return proxy, url

    yield start
    for proxy in started:
        proxy.never.set()
        if hasattr(proxy, "go"):
            proxy.go.set()
        await proxy.runner.cleanup()
