"""Processes the benchmark starts (the satellite server, nginx or the fallback static server) and the
measurements taken from outside them (RSS and CPU of a process tree). Everything started here is
registered with a `Cleanup` and ended by pid, even when the run fails or is interrupted."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import psutil

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
POSTGRES_NAMES = {"postgres", "postmaster", "pg_ctl", "initdb"}
NGINX_CANDIDATES = ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx")


class Cleanup:
    """Undo steps, run last-in first-out exactly once; each step's failure is reported, not raised."""

    def __init__(self) -> None:
        self._steps: list[tuple[str, Callable[[], None]]] = []

    def add(self, what: str, step: Callable[[], None]) -> None:
        self._steps.append((what, step))

    def run(self) -> None:
        while self._steps:
            what, step = self._steps.pop()
            try:
                step()
            except Exception as exc:
                print(f"cleanup: {what} failed: {exc}", file=sys.stderr)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc: subprocess.Popen, *, grace: float, sig: int = signal.SIGTERM) -> None:
    """Signal one process we started (by pid), wait, then kill it."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(timeout=5)


def wait_http(url: str, proc: subprocess.Popen, *, timeout: float, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_tail(log) if log else ""
            raise RuntimeError(f"{proc.args[0]} exited with status {proc.returncode} while starting{tail}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                resp.read()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


def log_tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return ("\n--- " + path.name + " (last lines) ---\n" + "\n".join(text)) if text else ""


def log_problems(path: Path, shown: int = 3) -> tuple[int, list[str]]:
    """How many error records the server logged (console or JSON format), and the first few distinct
    messages."""
    count, first = 0, []
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return 0, []
    for line in lines:
        match = re.search(r"\[(error|critical)\s*\]\s*(.*)|\"level\":\s*\"(error|critical)\"", line)
        if not match:
            continue
        count += 1
        text = re.sub(r"\s+", " ", match.group(2) or line)[:160]
        text = re.sub(r"/[0-9a-f]{64}", "/<sha256>", re.sub(r"request_id=\S+", "", text)).strip()
        if text not in first and len(first) < shown:
            first.append(text)
    return count, first


class Tree:
    """A process and its descendants, optionally without the PostgreSQL processes among them."""

    def __init__(self, pid: int, *, exclude_postgres: bool = True) -> None:
        self.root = psutil.Process(pid)
        self.exclude_postgres = exclude_postgres
        self._known: dict[int, psutil.Process] = {}

    def processes(self) -> list[psutil.Process]:
        try:
            found = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return []
        out = []
        for proc in found:
            known = self._known.setdefault(proc.pid, proc)
            try:
                if self.exclude_postgres and known.name() in POSTGRES_NAMES:
                    continue
            except psutil.Error:
                continue
            out.append(known)
        return out

    def rss(self) -> int:
        total = 0
        for proc in self.processes():
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
        return total

    def cpu_seconds(self) -> float:
        total = 0.0
        for proc in self.processes():
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system
        return total


def postgres_tree(pgdata: Path) -> Tree | None:
    """The embedded PostgreSQL postmaster and its backends, from its postmaster.pid."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().splitlines()[0])
        return Tree(pid, exclude_postgres=False)
    except (OSError, ValueError, IndexError, psutil.Error):
        return None


def postgres_dsn(pgdata: Path) -> str:
    """The embedded server's URL; its socket directory is line 5 of postmaster.pid."""
    socket_dir = str(pgdata)
    with contextlib.suppress(OSError, IndexError):
        line = (pgdata / "postmaster.pid").read_text().splitlines()[4].strip()
        if line:
            socket_dir = line
    return f"postgresql://postgres:@/postgres?host={socket_dir}"


class RssSampler:
    """Samples a tree's RSS every `interval` seconds in a thread, keeping the peak."""

    def __init__(self, tree: Tree, interval: float = 0.02) -> None:
        self.tree = tree
        self.interval = interval
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.tree.rss())
            self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def start_satellite(
    tmp: Path, cleanup: Cleanup, *, timeout: float, extra_env: dict[str, str] | None = None
) -> tuple[subprocess.Popen, str, Path]:
    """`satellite serve` on embedded defaults in tmp/data on a free loopback port; (process, base URL,
    data dir). WORKERS, when set in our environment, is passed through unchanged; `extra_env` overrides the
    bench's own settings (e.g. LOG_LEVEL)."""
    port = free_port()
    data_dir = tmp / "data"
    env = {
        **os.environ,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "DATA_DIR": str(data_dir),
        "LOG_LEVEL": "warning",
        "ENVIRONMENT": "dev",
        "LIGHTNING_BACKEND": "dev",
        "PRICE_SATS_PER_GB_MONTH": "50",
        "FREE_STORAGE_BYTES": "0",
    }
    for name in ("DATABASE_URL", "PUBLIC_URL", "STORAGE_DIR", "SERVICE_KEY"):
        env.pop(name, None)
    env.update(extra_env or {})
    log = tmp / "satellite.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "satellite", "serve"],
            env=env,
            cwd=tmp,  # no .env from the work tree
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    pgdata = data_dir / "postgres"

    def stop() -> None:
        postmaster = postgres_tree(pgdata)
        stop_process(proc, grace=20)
        if postmaster is not None and postmaster.root.is_running():
            # The server stops its embedded PostgreSQL on a clean exit; if it did not, fast shutdown.
            with contextlib.suppress(psutil.Error):
                postmaster.root.send_signal(signal.SIGINT)
                try:
                    postmaster.root.wait(timeout=10)
                except psutil.TimeoutExpired:
                    postmaster.root.kill()

    cleanup.add("stop satellite", stop)
    base = f"http://127.0.0.1:{port}"
    wait_http(base + "/health", proc, timeout=timeout, log=log)
    return proc, base, data_dir


def find_nginx() -> str | None:
    found = shutil.which("nginx")
    if found:
        return found
    return next((c for c in NGINX_CANDIDATES if os.access(c, os.X_OK)), None)


def start_static(
    kind: str, root: Path, tmp: Path, cleanup: Cleanup, *, probe: str, timeout: float = 15
) -> tuple[subprocess.Popen, str]:
    """A plain static file server on `root`: nginx (single process, sendfile) or bench/static_server.py
    (asyncio loop.sendfile). Returns (process, base URL)."""
    port = free_port()
    log = tmp / f"{kind}-static.log"
    if kind == "nginx":
        nginx = find_nginx()
        assert nginx is not None
        prefix = tmp / "nginx"
        prefix.mkdir()
        conf = prefix / "nginx.conf"
        temp_paths = "\n".join(
            f"    {name}_temp_path {prefix / name};"
            for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        conf.write_text(
            f"""daemon off;
master_process off;
worker_processes 1;
error_log {prefix / "err.log"};
pid {prefix / "nginx.pid"};
events {{}}
http {{
    sendfile on;
    tcp_nopush on;
    access_log off;
    keepalive_requests 1000000;
    default_type application/octet-stream;
{temp_paths}
    server {{
        listen 127.0.0.1:{port};
        root {root};
    }}
}}
"""
        )
        args = [nginx, "-p", str(prefix), "-e", str(prefix / "err.log"), "-c", str(conf)]
        log = prefix / "err.log"
    else:
        args = [sys.executable, str(BENCH / "static_server.py"), str(root), str(port)]
    with (tmp / f"{kind}.out").open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    cleanup.add(
        f"stop {kind}",
        lambda: stop_process(proc, grace=5, sig=signal.SIGQUIT if kind == "nginx" else signal.SIGTERM),
    )
    base = f"http://127.0.0.1:{port}"
    wait_http(base + probe, proc, timeout=timeout, log=log)
    return proc, base


class Run(Protocol):
    """What a benchmark run keeps: its figures (printed as the last line, JSON) and its notes."""

    fig: dict[str, Any]
    notes: list[str]


def drive(
    *,
    name: str,
    total_seconds: float,
    keep_log_env: str,
    make: Callable[[Path, Cleanup], Run],
    run: Callable[[Any], Awaitable[None]],
    server: Callable[[Any], subprocess.Popen | None],
    header: Callable[[dict[str, Any]], str],
    report: Callable[[dict[str, Any], list[str]], None],
    say: Callable[[str], None],
    started: float,
) -> int:
    """One bounded run of a benchmark: a temp dir, signals and a backstop alarm turned into errors,
    `run(bench)` within `total_seconds` (5 s kept for cleanup), the server's log checked (and kept at
    $keep_log_env), everything started undone, then the report and a last JSON line. Exit status."""
    cleanup = Cleanup()
    tmp = Path(tempfile.mkdtemp(prefix=f"satellite-{name}-"))
    cleanup.add("remove the temp dir", lambda: shutil.rmtree(tmp, ignore_errors=True))

    def on_signal(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    def on_alarm(_signum: int, _frame: object) -> None:
        raise TimeoutError(f"the whole run exceeded {total_seconds:.0f} s")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(int(total_seconds) + 5)  # backstop if the event loop is stuck in a blocking call
    bench: Run | None = None
    error = None
    try:
        bench = make(tmp, cleanup)
        print(header(bench.fig), flush=True)

        async def bounded() -> None:
            async with asyncio.timeout(total_seconds - 5):
                await run(bench)

        asyncio.run(bounded())
    except (Exception, KeyboardInterrupt) as exc:
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if isinstance(exc, TimeoutError) and not str(exc):
            error = f"TimeoutError: the run hit its limit ({total_seconds:.0f} s, 5 s of it kept for cleanup)"
        proc = server(bench) if bench is not None else None
        if proc is not None and proc.poll() is not None:
            error += f" (the server had exited with status {proc.returncode})"
        print(f"{name} failed: {error}{log_tail(tmp / 'satellite.log')}", file=sys.stderr)
    finally:
        signal.alarm(0)
        count, first = log_problems(tmp / "satellite.log")
        if count and bench is not None:
            bench.notes.append(f"the server logged {count} errors: " + " | ".join(first))
        if os.environ.get(keep_log_env):
            with contextlib.suppress(OSError):
                shutil.copyfile(tmp / "satellite.log", os.environ[keep_log_env])
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # let the cleanup finish
        say("cleaning up")
        cleanup.run()
    wall = round(time.monotonic() - started, 1)
    if bench is not None:
        bench.fig["wall_s"] = wall
        if error:
            bench.fig["error"] = error
        report(bench.fig, bench.notes)
        bench.fig["notes"] = bench.notes
        print(f"wall time {wall} s")
        print(json.dumps(bench.fig, separators=(",", ":")))
    return 1 if error else 0
