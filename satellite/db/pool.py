"""Connection pool, and the embedded PostgreSQL server used when no DATABASE_URL is configured."""

from __future__ import annotations

import asyncio
import contextlib
import io
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import asyncpg.pool

from satellite.errors import DatabaseBusy

DEFAULT_ACQUIRE_TIMEOUT_SECONDS = 5.0
# The database went away, is restarting, refuses connections or is too busy: worth retrying. Any other
# error (a missing table, a violated constraint, a bug) is not, and is left to the caller's supervisor.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    DatabaseBusy,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,  # what a connection cut in the middle of a query can also raise
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
)


class TrackedConnection(asyncpg.Connection):  # type: ignore[misc]  # asyncpg has no type information
    """A pooled connection that knows whether it holds a session-level advisory lock, so that releasing
    it costs a round trip only then."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.session_locks = 0

    def note_session_lock(self, delta: int) -> None:
        self.session_locks += delta


async def _reset(conn: TrackedConnection) -> None:
    """On release (after asyncpg has rolled back any open transaction): nothing, unless a session
    lock was taken and not released, as when a task is cancelled between lock and unlock; then every
    advisory lock of the session goes, so none can leak to the connection's next user. Skipping
    asyncpg's default reset saves a round trip on every other release."""
    if conn.session_locks:
        await conn.execute("SELECT pg_advisory_unlock_all()")
        conn.session_locks = 0


class BoundedPool(asyncpg.Pool):  # type: ignore[misc]  # asyncpg has no type information
    """A pool whose every acquisition (explicit, or inside `pool.fetch` and friends) waits at most
    `acquire_timeout` seconds for a free connection, then raises DatabaseBusy (answered 503)."""

    def __init__(self, *args: Any, acquire_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.acquire_timeout = acquire_timeout

    async def _acquire(self, timeout: float | None) -> Any:  # noqa: ASYNC109 (asyncpg's signature)
        try:
            return await super()._acquire(self.acquire_timeout if timeout is None else timeout)
        except TimeoutError:
            raise DatabaseBusy(
                f"no database connection became free within {self.acquire_timeout} s"
            ) from None


async def create_pool(
    dsn: str, *, max_size: int, acquire_timeout: float = DEFAULT_ACQUIRE_TIMEOUT_SECONDS
) -> asyncpg.Pool:
    pool = BoundedPool(
        dsn,
        acquire_timeout=acquire_timeout,
        min_size=1,
        max_size=max_size,
        max_queries=50_000,
        max_inactive_connection_lifetime=300.0,
        loop=None,
        connection_class=TrackedConnection,
        record_class=asyncpg.Record,
        command_timeout=60,
        server_settings={"timezone": "UTC"},
        reset=_reset,
    )
    await pool
    return pool


@contextlib.contextmanager
def embedded_postgres(data_dir: Path) -> Iterator[str]:
    """Start (or join) a PostgreSQL server whose data lives in `data_dir/postgres`; yield its URL."""
    # pgserver prints its progress to stdout; keep the server's output to our own log lines.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        from pgserver.postgres_server import get_server

        data_dir.mkdir(parents=True, exist_ok=True)
        server = get_server(data_dir / "postgres", cleanup_mode="stop")
    try:
        yield server.get_uri()
    finally:
        with contextlib.suppress(Exception), contextlib.redirect_stdout(io.StringIO()):
            server.cleanup()


async def wait_for_database(dsn: str, *, attempts: int = 30) -> None:
    """Fail with a clear message if the database cannot be reached after a few seconds."""
    last: Exception | None = None
    for _ in range(attempts):
        try:
            conn = await asyncpg.connect(dsn, timeout=5)
        except (asyncpg.InvalidCatalogNameError, asyncpg.InvalidAuthorizationSpecificationError) as exc:
            raise RuntimeError(f"cannot connect to the database: {exc}") from None  # waiting will not help
        except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
            last = exc
            await asyncio.sleep(0.2)
            continue
        await conn.close()
        return
    raise RuntimeError(f"cannot connect to the database: {last}")
