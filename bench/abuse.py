"""The abuse bench (`python bench/abuse.py`): how much 200 slow or abusive clients hurt normal ones.

Starts `satellite serve` on embedded defaults in a temp DATA_DIR on a free loopback port (as
bench/run.py does; WORKERS is passed through), buys credit for the normal accounts and for the accounts
the slow-body abusers sign with through the real purchase flow, uploads one 64 KiB blob, then runs the
same normal load three times:

- the normal load, from NORMAL_USERS accounts each with its own loopback address (127.0.0.1 ...):
  UPLOADERS uploaders, each PUTting distinct 64 KiB files one after another, every request with a
  freshly signed kind 22242 event, and DOWNLOADERS concurrent downloaders GETting the 64 KiB blob, for
  PHASE_SECONDS (after WARMUP_SECONDS of the same load, not counted);
- phase A: alone (the baseline);
- phase B: with 200 abusive clients running in a separate process (bench/abusers.py, whose docstring
  says what each kind does), started before the phase and stopped at its end;
- phase C: alone again (does the server recover; how noisy is A).

Reports, for uploads and downloads, p50/p99 latency (successful requests) and throughput in A and B and
how many times worse B is (latency B/A, throughput A/B; the target is < 2x); what the abusers saw
(connections cut by the server, statuses such as 408/429/503/403, connections still open at the end);
the growth of the server's log (stdout+stderr, LOG_LEVEL=info unless ABUSE_LOG_LEVEL says otherwise)
during phase B; CPU used by each process. The last line is JSON with every figure. The whole run is
bounded (ABUSE_TIMEOUT, default 120 s) and everything it starts is stopped, also on failure and Ctrl-C.
ABUSE_PHASE_SECONDS changes the length of each phase, ABUSE_MIX the abusers (KIND=COUNT,...; default
DEFAULT_MIX), ABUSE_SOURCES how many loopback source addresses the abusers connect from (default one
per abuser, 127.0.1.x; 0: 127.0.0.1, the first normal user's), ABUSE_LOG=path keeps the server's log. Server
settings in the environment (e.g. UPLOADS_PER_IP) reach the server unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import re
import resource
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import procs
import psutil
from abusers import KINDS
from run import machine_facts, percentile

from satellite.nostr.keys import SecretKey

sys.path.insert(0, str(procs.ROOT / "tests"))
from billing_helpers import account, dev_pay, invoice_for, wait_for
from nostr_helpers import auth_params

KIB = 1024
BLOB = 64 * KIB
UPLOADERS = 8
DOWNLOADERS = 16
NORMAL_USERS = 8  # accounts, each with its own source address 127.0.0.1 ... 127.0.0.8
ABUSER_ACCOUNTS = 2
GB_MONTHS = 10
PHASE_SECONDS = float(os.environ.get("ABUSE_PHASE_SECONDS", "15"))
WARMUP_SECONDS = 2.0
REQUEST_TIMEOUT = 10.0
ERROR_PAUSE = 0.05
DEFAULT_MIX = "slowloris=50,slow_body=30,hold=40,bad_auth=40,credit_flood=20,connect_flood=20"
FDS_WANTED = 4096
TARGET = 2.0
TOTAL_SECONDS = float(os.environ.get("ABUSE_TIMEOUT", "120"))
LOG_LEVEL = os.environ.get("ABUSE_LOG_LEVEL", "info")
STARTED = time.monotonic()


def parse_mix(text: str) -> dict[str, int]:
    mix = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        kind, _, count = item.partition("=")
        if kind not in KINDS or not count.isdigit():
            raise SystemExit(f"ABUSE_MIX: {item!r} is not KIND=COUNT with KIND one of {', '.join(KINDS)}")
        mix[kind] = int(count)
    return mix


MIX = parse_mix(os.environ.get("ABUSE_MIX", DEFAULT_MIX))
# Source addresses of the abusers: 127.0.1.1 ... 127.0.1.N, client i from the (i mod N)-th; 0: the
# system's choice, 127.0.0.1, which is also the first normal user's address.
SOURCES = int(os.environ.get("ABUSE_SOURCES", str(min(254, sum(MIX.values())))))


def say(message: str) -> None:
    print(f"[{time.monotonic() - STARTED:6.1f}s] {message}", file=sys.stderr, flush=True)


def raise_fd_limit(notes: list[str]) -> dict:
    """Soft limit up to the hard one (the server and the abusers inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = FDS_WANTED if hard == resource.RLIM_INFINITY else min(FDS_WANTED, hard)
    if soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError) as exc:
            notes.append(f"could not raise the fd soft limit from {soft} to {wanted}: {exc}")
    if soft < 2 * sum(MIX.values()) + 256:
        notes.append(f"fd soft limit {soft} may be too low for {sum(MIX.values())} abusers")
    return {"soft": soft, "hard": "unlimited" if hard == resource.RLIM_INFINITY else hard}


@dataclass
class Side:
    """One direction of the normal load in one phase."""

    latencies: list[float] = field(default_factory=list)
    bytes: int = 0
    failures: Counter[str] = field(default_factory=Counter)

    def figures(self, seconds: float) -> dict:
        return {
            "ok": len(self.latencies),
            "failed": sum(self.failures.values()),
            "failures": dict(self.failures),
            "req_s": round(len(self.latencies) / seconds, 1),
            "mib_s": round(self.bytes / seconds / 2**20, 2),
            "p50_ms": round(percentile(self.latencies, 0.50) * 1e3, 2),
            "p99_ms": round(percentile(self.latencies, 0.99) * 1e3, 2),
            "max_ms": round(max(self.latencies, default=float("nan")) * 1e3, 2),
        }


def postgres_cpu(tree: procs.Tree | None) -> float:
    """CPU seconds of the postmaster and its backends, the ones that have exited included (the
    postmaster reaps them, so they are in its children's times)."""
    if tree is None:
        return 0.0
    total = tree.cpu_seconds()
    with contextlib.suppress(psutil.Error):
        times = tree.root.cpu_times()
        total += times.children_user + times.children_system
    return total


def log_slice(path: Path, start: int) -> dict:
    """Bytes and lines the server logged from offset `start`, and its most frequent messages."""
    try:
        with path.open("rb") as handle:
            handle.seek(start)
            data = handle.read()
    except OSError:
        return {"bytes": 0, "lines": 0, "top": []}
    lines = data.decode(errors="replace").splitlines()
    messages: Counter[str] = Counter()
    for line in lines:
        match = re.search(r"\[\s*(\w+)\s*\]\s+(.*?)(?:\s{2,}|$)", line) or re.search(
            r'"event":\s*"([^"]*)"', line
        )
        text = " ".join(match.groups()) if match else line[:80]
        messages[re.sub(r"[0-9a-f]{16,}", "<hex>", text)[:100]] += 1
    return {
        "bytes": len(data),
        "lines": len(lines),
        "top": [f"{n} x {text}" for text, n in messages.most_common(5)],
    }


class AbuseBench:
    def __init__(self, tmp: Path, cleanup: procs.Cleanup) -> None:
        self.tmp = tmp
        self.cleanup = cleanup
        self.notes: list[str] = []
        self.fig: dict = {"machine": machine_facts(), "fd_limit": raise_fd_limit(self.notes)}
        self.fig.update(
            uploaders=UPLOADERS,
            downloaders=DOWNLOADERS,
            blob_bytes=BLOB,
            phase_seconds=PHASE_SECONDS,
            abusers=MIX,
            abuser_source_addresses=SOURCES or "127.0.0.1, shared with the first normal user",
            server_log_level=LOG_LEVEL,
        )
        self.log = tmp / "satellite.log"

    async def start(self) -> None:
        say("starting satellite serve (embedded PostgreSQL)")
        started = time.perf_counter()
        self.proc, self.base, data_dir = await asyncio.to_thread(
            procs.start_satellite, self.tmp, self.cleanup, timeout=60, extra_env={"LOG_LEVEL": LOG_LEVEL}
        )
        self.fig["server_start_s"] = round(time.perf_counter() - started, 2)
        self.server = procs.Tree(self.proc.pid)
        self.postgres = procs.postgres_tree(data_dir / "postgres")
        self.port = int(self.base.rsplit(":", 1)[1])
        # The normal load comes from NORMAL_USERS users, each an account with an address of its own (as
        # distinct users would be to per-address and per-account limits).
        self.sessions = [
            aiohttp.ClientSession(
                base_url=self.base,
                connector=aiohttp.TCPConnector(limit=0, local_addr=(f"127.0.0.{1 + i}", 0)),
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT),
            )
            for i in range(NORMAL_USERS)
        ]
        self.session = self.sessions[0]

    async def buy_credit(self) -> None:
        self.keys = [SecretKey.generate() for _ in range(NORMAL_USERS)]
        self.abuser_keys = [SecretKey.generate() for _ in range(ABUSER_ACCOUNTS)]

        async def buy(key: SecretKey, session: aiohttp.ClientSession) -> None:
            _, _, pr = await invoice_for(session, key, GB_MONTHS)
            resp = await dev_pay(session, pr)
            assert resp.status == 200, await resp.text()
            resp.release()

            async def credited() -> bool:
                return (await account(session, key))["creditTotal"] > 0

            await wait_for(credited, within=40)

        started = time.perf_counter()
        async with asyncio.timeout(60):
            await asyncio.gather(
                *(buy(k, self.sessions[i % len(self.sessions)]) for i, k in enumerate(self.keys)),
                *(buy(k, self.session) for k in self.abuser_keys),
            )
        self.fig["credit_purchase_s"] = round(time.perf_counter() - started, 2)
        say(f"bought {GB_MONTHS} GB-months for {len(self.keys) + len(self.abuser_keys)} accounts")
        params = auth_params(self.keys[0], "Authorize Upload", [["size", str(BLOB)], ["name", "get.bin"]])
        async with self.session.put("/item", params=params, data=os.urandom(BLOB)) as resp:
            assert resp.status == 200, await resp.text()
            self.blob_path = "/" + (await resp.json())["url"].rsplit("/", 1)[1]

    # --- the normal load ---------------------------------------------------------------------------

    async def normal_load(self, seconds: float) -> dict:
        up, down = Side(), Side()
        clock = time.perf_counter
        stop_at = clock() + seconds

        async def attempt(side: Side, size: int, request: Any) -> None:
            started = clock()
            try:
                async with request as resp:
                    body = await resp.read()
                    if resp.status == 200 and len(body) >= (size if side is down else 1):
                        side.latencies.append(clock() - started)
                        side.bytes += size
                    else:
                        side.failures[str(resp.status)] += 1
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                side.failures[type(exc).__name__] += 1
                if self.proc.poll() is not None:
                    raise RuntimeError(f"the server exited with status {self.proc.returncode}") from exc
                await asyncio.sleep(ERROR_PAUSE)  # no tight loop against a refusing port

        async def uploader(w: int) -> None:
            key, session = self.keys[w % len(self.keys)], self.sessions[w % len(self.sessions)]
            n = 0
            while clock() < stop_at:
                n += 1
                tags = [["size", str(BLOB)], ["name", f"u{w}-{n}.bin"]]
                params = auth_params(key, "Authorize Upload", tags)
                await attempt(up, BLOB, session.put("/item", params=params, data=os.urandom(BLOB)))

        async def downloader(d: int) -> None:
            session = self.sessions[d % len(self.sessions)]
            while clock() < stop_at:
                await attempt(down, BLOB, session.get(self.blob_path))

        started = clock()
        cpu = self.cpu()
        await asyncio.gather(
            *(uploader(w) for w in range(UPLOADERS)), *(downloader(d) for d in range(DOWNLOADERS))
        )
        elapsed = clock() - started
        return {
            "seconds": round(elapsed, 2),
            "upload": up.figures(elapsed),
            "download": down.figures(elapsed),
            "cores": self.cores(cpu, elapsed),
        }

    def cpu(self) -> dict[str, float]:
        out = {
            "server": self.server.cpu_seconds(),
            "postgres": postgres_cpu(self.postgres),
            "normal_clients": time.process_time(),
        }
        child = getattr(self, "abusers", None)
        if child is not None:
            with contextlib.suppress(psutil.Error):
                times = psutil.Process(child.pid).cpu_times()
                out["abusers"] = times.user + times.system
        return out

    def cores(self, before: dict[str, float], seconds: float) -> dict[str, float]:
        after = self.cpu()
        return {name: round((after[name] - before[name]) / seconds, 2) for name in before if name in after}

    def server_tcp(self) -> int:
        """Established TCP connections on the server's port, seen from its processes."""
        count = 0
        for proc in self.server.processes():
            with contextlib.suppress(psutil.Error):
                count += sum(
                    1
                    for c in proc.net_connections(kind="tcp")
                    if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == self.port
                )
        return count

    # --- phases ----------------------------------------------------------------------------------

    async def phase_a(self) -> None:
        say(f"warm-up: {WARMUP_SECONDS:g} s of the normal load")
        await self.normal_load(WARMUP_SECONDS)
        say(f"phase A: {UPLOADERS} uploaders + {DOWNLOADERS} downloaders, {PHASE_SECONDS:g} s, no abusers")
        start = self.log.stat().st_size
        self.fig["a"] = await self.normal_load(PHASE_SECONDS)
        self.fig["a"]["log"] = log_slice(self.log, start)
        self.fig["a"]["server_rss_mib"] = round(self.server.rss() / 2**20, 1)

    def start_abusers(self) -> subprocess.Popen:
        """bench/abusers.py in its own process, its stderr in the temp dir; stopped by the cleanup."""
        config = {
            "base": self.base,
            "mix": MIX,
            "upload_keys": [k.raw.hex() for k in self.abuser_keys],
            "sources": [str(ipaddress.IPv4Address("127.0.1.0") + 1 + i % 254) for i in range(SOURCES)],
            "max_seconds": PHASE_SECONDS + 30,
        }
        with (self.tmp / "abusers.err").open("wb") as err:
            child = subprocess.Popen(
                [sys.executable, str(procs.BENCH / "abusers.py"), json.dumps(config)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                start_new_session=True,
            )
        self.cleanup.add("stop the abusers", lambda: procs.stop_process(child, grace=3))
        return child

    async def phase_b(self) -> None:
        mix = ", ".join(f"{k} {v}" for k, v in MIX.items())
        say(f"phase B: starting {sum(MIX.values())} abusers ({mix})")
        log_start = self.log.stat().st_size
        rss_before = self.server.rss()
        self.abusers = child = self.start_abusers()
        assert child.stdin is not None and child.stdout is not None
        try:
            async with asyncio.timeout(15):
                ready = await asyncio.to_thread(child.stdout.readline)
            self.fig["abusers_ready"] = json.loads(ready)
        except (TimeoutError, ValueError) as exc:
            tail = procs.log_tail(self.tmp / "abusers.err")
            raise RuntimeError(f"the abusers did not start: {exc!r}{tail}") from exc
        say(f"  abusers ready: {self.fig['abusers_ready']}; normal load for {PHASE_SECONDS:g} s")
        sampled: dict = {}

        async def sample_at_end() -> None:
            await asyncio.sleep(max(0.0, PHASE_SECONDS - 0.5))
            sampled["server_tcp_established"] = await asyncio.to_thread(self.server_tcp)
            sampled["server_rss_mib"] = round(self.server.rss() / 2**20, 1)

        sampler = asyncio.create_task(sample_at_end())
        self.fig["b"] = await self.normal_load(PHASE_SECONDS)
        await sampler
        with contextlib.suppress(OSError):
            child.stdin.write(b"stop\n")
            child.stdin.flush()
        try:
            async with asyncio.timeout(20):
                line = await asyncio.to_thread(child.stdout.readline)
            self.fig["abuse"] = json.loads(line)
        except (TimeoutError, ValueError) as exc:
            self.notes.append(f"no figures from the abusers: {exc!r}")
            self.fig["abuse"] = {"kinds": {}}
        with contextlib.suppress(subprocess.TimeoutExpired):
            await asyncio.to_thread(child.wait, 5)
        await asyncio.to_thread(procs.stop_process, child, grace=5)
        await asyncio.sleep(1)  # what the server logs about the connections just dropped
        self.fig["b"].update(sampled)
        self.fig["b"]["server_rss_before_mib"] = round(rss_before / 2**20, 1)
        self.fig["b"]["log"] = log_slice(self.log, log_start)
        if child.returncode not in (0, None):
            self.notes.append(f"the abuser process exited with {child.returncode}")

    async def after(self) -> None:
        """Is the server still fine once the abusers are gone?"""
        started = time.perf_counter()
        try:
            async with self.session.get("/health", timeout=aiohttp.ClientTimeout(total=10)) as resp:
                await resp.read()
                status: object = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            status = type(exc).__name__
        self.fig["health_after"] = {"status": status, "ms": round((time.perf_counter() - started) * 1e3, 1)}
        self.fig["server_tcp_after"] = await asyncio.to_thread(self.server_tcp)
        say(f"phase C: the normal load alone again, {PHASE_SECONDS:g} s (recovery, and run-to-run noise)")
        self.fig["c"] = await self.normal_load(PHASE_SECONDS)

    async def run(self) -> None:
        await self.start()
        try:
            await self.buy_credit()
            await self.phase_a()
            await self.phase_b()
            await self.after()
            if self.proc.poll() is not None:
                self.notes.append(f"the server exited with status {self.proc.returncode}")
        finally:
            for session in self.sessions:
                await session.close()


# --- report -----------------------------------------------------------------------------------------


def worse(a: float | None, b: float | None, higher_is_better: bool) -> float | None:
    if not a or not b or a != a or b != b:  # missing, zero or NaN
        return None
    return round(a / b if higher_is_better else b / a, 2)


def report(fig: dict, notes: list[str]) -> None:
    a, b, c = fig.get("a"), fig.get("b"), fig.get("c")
    if a and b:
        rows = []
        for side in ("upload", "download"):
            for name, unit, higher in (
                ("p50_ms", "p50 ms", False),
                ("p99_ms", "p99 ms", False),
                ("req_s", "req/s", True),
                ("mib_s", "MiB/s", True),
            ):
                va, vb = a[side][name], b[side][name]
                factor = worse(va, vb, higher)
                ok = "" if factor is None else ("yes" if factor < TARGET else "NO")
                vc = str(c[side][name]) if c else "-"
                rows.append(
                    (f"{side} {unit}", str(va), str(vb), "-" if factor is None else f"{factor}x", ok, vc)
                )
                fig.setdefault("worse", {})[f"{side}_{name}"] = factor
            failed = [str(p[side]["failed"]) if p else "-" for p in (a, b, c)]
            rows.append((f"{side} failed requests", failed[0], failed[1], "", "", failed[2]))
        headers = (
            "normal clients",
            "A: alone",
            f"B: +{sum(MIX.values())} abusers",
            "x worse",
            f"< {TARGET:g}x",
            "C: alone, after",
        )
        table(headers, rows)
        for side in ("upload", "download"):
            if any(p and p[side]["failures"] for p in (a, b, c)):
                found = {name: p[side]["failures"] for name, p in zip("ABC", (a, b, c), strict=True) if p}
                print(f"  {side} failures: {found}")
        print(f"  CPU cores used: A {a['cores']}  B {b['cores']}")
        print("  (x worse: latency B/A, throughput A/B; percentiles over successful requests)")
    abuse = fig.get("abuse", {}).get("kinds", {})
    if abuse:
        print()
        rows = []
        totals: Counter[str] = Counter()
        for kind, k in abuse.items():
            totals.update(k["statuses"])
            rows.append(
                (
                    kind,
                    str(k["clients"]),
                    str(k["connections"]),
                    str(sum(k["connect_errors"].values())),
                    str(k["cut_by_server"]),
                    str(k["cut"].get("answered", 0)),
                    "-" if k["cut_lifetime_median_s"] is None else str(k["cut_lifetime_median_s"]),
                    str(k["requests"]) if k["requests"] else "",
                    " ".join(f"{s}:{n}" for s, n in k["statuses"].items()),
                    str(k["open_at_end"]),
                    "-" if k["open_age_median_s"] is None else str(k["open_age_median_s"]),
                )
            )
        headers = (
            "abuser",
            "clients",
            "conns",
            "conn errs",
            "cut by srv",
            "answered",
            "cut after s",
            "requests",
            "statuses",
            "open at end",
            "open age s",
        )
        table(headers, rows)
        fig["abuser_statuses"] = {s: totals.get(s, 0) for s in ("403", "408", "429", "503")}
        fig["abusers_cut_by_server"] = sum(k["cut_by_server"] for k in abuse.values())
        fig["abusers_open_at_end"] = sum(k["open_at_end"] for k in abuse.values())
        statuses = " / ".join(str(v) for v in fig["abuser_statuses"].values())
        print(
            f"  abuser statuses 403/408/429/503: {statuses};"
            f" cut by the server: {fig['abusers_cut_by_server']};"
            f" open at the end: {fig['abusers_open_at_end']} of {sum(MIX.values())}"
        )
        print(
            "  (cut by srv: the server closed or reset the connection, or answered and closed it; answered:"
            " it answered and kept the connection, which the abuser then dropped; cut after s: median"
            " lifetime of the cut connections; open age s: median age of the connections open at the end)"
        )
        errors = {k: v["connect_errors"] for k, v in abuse.items() if v["connect_errors"]}
        if errors:
            print(f"  connect errors: {errors}")
    if b:
        print(
            f"  server: {b.get('server_tcp_established')} established TCP connections near the end of B;"
            f" RSS {b.get('server_rss_before_mib')} -> {b.get('server_rss_mib')} MiB;"
            f" health after: {fig.get('health_after')}"
        )
        for phase in ("a", "b"):
            log = fig[phase]["log"]
            print(f"  server log during {phase.upper()}: {log['bytes']} bytes, {log['lines']} lines")
            for line in log["top"]:
                print(f"    {line}")
    for note in notes:
        print(f"note: {note}")


def table(headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    print(line)
    print("-" * len(line))
    for r in rows:
        print("  ".join(x.ljust(w) for x, w in zip(r, widths, strict=True)).rstrip())


def header(fig: dict) -> str:
    m = fig["machine"]
    return (
        f"satellite abuse bench: {m['cores']} cores ({m['usable_cores']} usable), {m['cpu']},"
        f" Python {m['python']}, aiohttp {m['aiohttp']}; server WORKERS={m['workers'] or 'unset'},"
        f" LOG_LEVEL={LOG_LEVEL}; fd limit {fig['fd_limit']['soft']};"
        f" abusers from {SOURCES or '127.0.0.1 (shared)'} source address(es);"
        f" normal load: {UPLOADERS} uploaders of distinct {BLOB // KIB} KiB files (a fresh signed event"
        f" each) + {DOWNLOADERS} downloaders of one {BLOB // KIB} KiB blob, {PHASE_SECONDS:g} s per phase"
    )


def main() -> int:
    return procs.drive(
        name="abuse",
        total_seconds=TOTAL_SECONDS,
        keep_log_env="ABUSE_LOG",
        make=AbuseBench,
        run=lambda bench: bench.run(),
        server=lambda bench: getattr(bench, "proc", None),
        header=header,
        report=report,
        say=say,
        started=STARTED,
    )


if __name__ == "__main__":
    sys.exit(main())
