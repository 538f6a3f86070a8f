"""Running the HTTP server: one process, or WORKERS processes sharing one port (SO_REUSEPORT).

With several workers a supervisor process starts the embedded PostgreSQL (when no DATABASE_URL is
set), applies migrations once, then spawns the workers and forwards shutdown signals to them. Workers
share nothing but the database and the blob store, so any of them may serve any request.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import multiprocessing.connection
import signal
import sys
from typing import Any

import asyncpg
import structlog
from aiohttp import web

from satellite.app import HTTP_LIMITS, create_app
from satellite.config import ConfigError, Settings
from satellite.db.migrate import migrate
from satellite.db.pool import embedded_postgres
from satellite.log import configure_logging
from satellite.storage.base import StorageUnavailable

log = structlog.get_logger("satellite.serve")


def run_worker(settings: Settings, *, reuse_port: bool) -> None:
    try:
        web.run_app(
            create_app(settings),
            host=settings.host,
            port=settings.port,
            access_log=None,
            print=None,
            shutdown_timeout=10,
            reuse_port=reuse_port,
            **HTTP_LIMITS,  # passed through to each connection's request handler
        )
    except (ConfigError, StorageUnavailable) as exc:
        sys.exit(f"satellite: {exc}")


def _worker_entry(settings_values: dict[str, Any]) -> None:
    settings = Settings(_env_file=None, **settings_values)
    configure_logging(json_logs=settings.json_logs, level=settings.log_level)
    run_worker(settings, reuse_port=True)


async def _migrate(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
    finally:
        await conn.close()


def serve(settings: Settings) -> None:
    configure_logging(json_logs=settings.json_logs, level=settings.log_level)
    if settings.workers == 1:
        run_worker(settings, reuse_port=False)
        return
    with contextlib.ExitStack() as stack:
        if not settings.database_url:
            dsn = stack.enter_context(embedded_postgres(settings.data_dir))
            settings = settings.model_copy(update={"database_url": dsn})
        asyncio.run(_migrate(settings.database_url))
        sys.exit(_supervise(settings))


def _supervise(settings: Settings) -> int:
    context = multiprocessing.get_context("spawn")
    values = settings.model_dump(mode="json")
    workers = [
        context.Process(target=_worker_entry, args=(values,), daemon=False) for _ in range(settings.workers)
    ]
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for worker in workers:
            if worker.is_alive() and worker.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    worker.terminate()  # SIGTERM: the worker drains its requests and exits

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for worker in workers:
        worker.start()
    log.info("workers started", count=len(workers), pids=[w.pid for w in workers], port=settings.port)
    multiprocessing.connection.wait([w.sentinel for w in workers])
    if not stopping:
        dead = [w.pid for w in workers if not w.is_alive()]
        log.error("a worker exited; stopping the others", pids=dead)
        stop(signal.SIGTERM, None)
    for worker in workers:
        worker.join(timeout=30)
        if worker.is_alive():
            worker.kill()
            worker.join()
    codes = [w.exitcode for w in workers]
    return 0 if stopping and all(code == 0 for code in codes) else 1
