"""Connection pool, and the embedded PostgreSQL server used when no DATABASE_URL is configured."""

from __future__ import annotations

import asyncio
import contextlib
import io
import warnings
from collections.abc import Iterator
from pathlib import Path

import asyncpg


async def _keep_session(_conn: asyncpg.Connection) -> None:
    """Released connections are not reset: asyncpg's default reset costs a round trip per release, and
    the only session state we take (a blob's advisory lock while deleting) is released by its owner."""


async def create_pool(dsn: str, *, max_size: int) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        dsn,
        min_size=1,
        max_size=max_size,
        command_timeout=60,
        server_settings={"timezone": "UTC"},
        reset=_keep_session,
    )
    assert pool is not None
    return pool


@contextlib.contextmanager
def embedded_postgres(data_dir: Path) -> Iterator[str]:
    """Start (or join) a PostgreSQL server whose data lives in `data_dir/postgres`; yield its URL."""
    # pgserver prints its progress to stdout; keep the server's output to our own log lines.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        import pgserver

        data_dir.mkdir(parents=True, exist_ok=True)
        server = pgserver.get_server(data_dir / "postgres", cleanup_mode="stop")
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
        except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
            last = exc
            await asyncio.sleep(0.2)
            continue
        await conn.close()
        return
    raise RuntimeError(f"cannot connect to the database: {last}")
