"""Running the HTTP server: one process, or WORKERS processes sharing one port (SO_REUSEPORT).

Settings are checked before anything starts. With several workers a supervisor process starts the
embedded PostgreSQL (when no DATABASE_URL is set) and applies migrations once, then spawns the workers
and forwards shutdown signals to them. Workers share nothing but the database and the blob store, so
any of them may serve any request.

SIGTERM or SIGINT, sent any number of times and at any moment from start-up on, gives one clean
shutdown: no new connections, requests in flight get SHUTDOWN_TIMEOUT_SECONDS to finish, background
tasks stop, and the process exits 0.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import structlog

from satellite.config import ConfigError, Settings
from satellite.log import configure_logging
from satellite.storage.base import StorageUnavailable

log = structlog.get_logger("satellite.serve")
WORKER_EXIT_SECONDS = 30.0
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_stop_requested = threading.Event()  # a stop signal that came before the event loop listened for it


def listen_for_stop_early() -> None:
    """From now on a stop signal asks for a stop instead of killing the process outright."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, lambda _signum, _frame: _stop_requested.set())


def serve(settings: Settings) -> None:
    listen_for_stop_early()
    configure_logging(json_logs=settings.json_logs, level=settings.log_level)
    from satellite.preflight import check_settings

    try:
        check_settings(settings)
        if settings.workers == 1:
            asyncio.run(_serve_app(settings, reuse_port=False))
            return
        code = asyncio.run(_serve_workers(settings))
    except (ConfigError, StorageUnavailable) as exc:  # a setting, or a store that cannot be reached
        sys.exit(f"satellite: {exc}")
    sys.exit(code)


async def _until_stopped(on_stop: Any = None) -> None:
    """Wait for the first stop signal (or one that came before); later ones are noted and change
    nothing. `on_stop(signal name)` runs for every one."""
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()

    def stop(name: str) -> None:
        if stopped.is_set():
            log.info("already stopping", signal=name)
        else:
            log.info("stopping", signal=name)
            stopped.set()
        if on_stop is not None:
            on_stop(name)

    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop, sig.name)
    if _stop_requested.is_set():
        stop("SIGTERM before start-up ended")
    await stopped.wait()


async def _serve_app(settings: Settings, *, reuse_port: bool) -> None:
    from aiohttp import web

    from satellite.api.connections import ConnectionLimits, GuardedAppRunner
    from satellite.app import HTTP_LIMITS, create_app

    asyncio.get_running_loop().set_exception_handler(_loop_error)
    limits = ConnectionLimits.from_settings(settings)
    runner = GuardedAppRunner(
        create_app(settings),
        limits,
        handle_signals=False,
        access_log=None,
        shutdown_timeout=settings.shutdown_timeout_seconds,
        # A handler whose client went away is cancelled (what must finish is shielded: a commit, a
        # delete), so an abandoned mirror stops fetching and frees its slot at once.
        handler_cancellation=True,
        **HTTP_LIMITS,  # passed through to each connection's request handler
    )
    cleanups: list[web.AppRunner] = []
    try:
        await runner.setup()  # the app's resources: database, storage, background tasks
        site = web.TCPSite(runner, settings.host, settings.port, reuse_port=reuse_port)
        await site.start()
        if settings.metrics_listen:
            await _serve_metrics(
                settings.metrics_listen, runner.app, reuse_port=reuse_port, cleanups=cleanups
            )
        log.info("listening", max_connections=limits.max_connections)
        await _until_stopped()
    finally:
        for extra in cleanups:
            await extra.cleanup()
        await runner.cleanup()
    log.info("stopped")


async def _serve_metrics(listen: str, main: Any, *, reuse_port: bool, cleanups: list[Any]) -> None:
    from aiohttp import web

    from satellite.app import create_metrics_app

    host, _, port = listen.rpartition(":")
    runner = web.AppRunner(create_metrics_app(main), handle_signals=False, access_log=None)
    await runner.setup()
    cleanups.append(runner)
    await web.TCPSite(runner, host.strip("[]"), int(port), reuse_port=reuse_port).start()
    log.info("metrics listening", address=listen)


def _loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The event loop's own errors (an accept that found no free descriptor, a callback that raised),
    as one line each without a traceback, repeated ones once per interval with a count."""
    exc = context.get("exception")
    log.error(
        "event loop error",
        kind=type(exc).__name__ if exc is not None else "",
        message=str(context.get("message", "")),
        error=str(exc) if exc is not None else None,
    )


def _worker_entry(settings_values: dict[str, Any]) -> None:
    listen_for_stop_early()  # first thing: the supervisor may forward a stop while this one starts
    settings = Settings(_env_file=None, **settings_values)
    configure_logging(json_logs=settings.json_logs, level=settings.log_level)
    try:
        asyncio.run(_serve_app(settings, reuse_port=True))
    except (ConfigError, StorageUnavailable) as exc:
        sys.exit(f"satellite: {exc}")


async def _serve_workers(settings: Settings) -> int:
    from satellite.db.database import database

    async with database(settings, create=True) as db:
        return await _supervise(settings.model_copy(update={"database_url": db.dsn}))


def _share_metrics(settings: Settings) -> None:
    """One directory for every worker's metrics (read whole by any scrape), its value files removed
    first: values left by an earlier run would be added to this one's."""
    from satellite.metrics import MULTIPROC_ENV

    directory = Path(os.environ.get(MULTIPROC_ENV) or settings.data_dir / "metrics")
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):  # prometheus-client's value files, nothing else
        stale.unlink()
    os.environ[MULTIPROC_ENV] = str(directory)  # spawned workers inherit it before importing anything


async def _supervise(settings: Settings) -> int:
    _share_metrics(settings)
    context = multiprocessing.get_context("spawn")
    values = settings.model_dump(mode="json")
    workers: list[BaseProcess] = [
        context.Process(target=_worker_entry, args=(values,), daemon=False) for _ in range(settings.workers)
    ]
    stopping = False

    def stop_workers(_name: str | None = None) -> None:
        nonlocal stopping
        stopping = True
        for worker in workers:
            if worker.is_alive() and worker.pid is not None:
                worker.terminate()  # SIGTERM: the worker drains its requests and exits

    for worker in workers:
        worker.start()
    log.info("workers started", count=len(workers), pids=[w.pid for w in workers], port=settings.port)
    waiting = asyncio.ensure_future(asyncio.to_thread(_first_exit, workers))
    signalled = asyncio.ensure_future(_until_stopped(stop_workers))
    await asyncio.wait({waiting, signalled}, return_when=asyncio.FIRST_COMPLETED)
    if not stopping:
        dead = [w.pid for w in workers if not w.is_alive()]
        log.error("a worker exited; stopping the others", pids=dead)
        stop_workers()
    await asyncio.to_thread(_join, workers)
    signalled.cancel()
    waiting.cancel()
    codes = [w.exitcode for w in workers]
    # A worker stopped before it could even listen for the signal had not served anything yet.
    clean = all(code == 0 or (stopping and code == -signal.SIGTERM) for code in codes)
    return 0 if stopping and clean else 1


def _first_exit(workers: list[BaseProcess]) -> None:
    """Block until a worker has exited."""
    multiprocessing.connection.wait([w.sentinel for w in workers])


def _join(workers: list[BaseProcess]) -> None:
    for worker in workers:
        worker.join(timeout=WORKER_EXIT_SECONDS)
        if worker.is_alive():
            worker.kill()
            worker.join()
