"""The benchmark (`make bench`): the server's speed against the machine's own limits, measured in one run.

Starts `satellite serve` on embedded defaults in a temp DATA_DIR on a free loopback port, buys credit
for the bench accounts through the real purchase flow (offer, signed 9734, LNURL callback, POST /dev/pay,
poll GET /account), then measures, every upload with a fresh kind 22242 event signed in the client just
before its request:

1. large upload: PUT /item of a 1 GiB file (once, with the server's peak RSS above idle sampled every
   20 ms) and of a 256 MiB file (median of 3; the last 64 bytes are re-randomized before each run so
   each is a new blob), both streamed from disk with Content-Length and a `size` tag;
2. small uploads: 400 distinct 16 KiB files at concurrency 16;
3. large download: full GET of the 256 MiB blob (median of 15, alternating with the static server of
   phase 5) and time to first byte of a ranged GET from its middle (median of 5);
4. small downloads: GET of one 16 KiB blob at concurrency 32 for 3 s (wrk, else an asyncio client
   in its own process);
5. limits, on the same bytes: hashlib sha256 and sha1 on one core, and a static file server (nginx,
   else bench/static_server.py) serving the same 256 MiB and 16 KiB files with the same clients;
6. O(1): phases 2 and 4 once more (run-to-run noise), then 100k accounts, blobs and files seeded
   straight into the database (one INSERT ... SELECT generate_series per table, then VACUUM ANALYZE
   and CHECKPOINT), then phases 2 and 4 again; after / before = after / mean of the two runs before.

Prints a table (figure, limit, ratio, target) and a final JSON line with every figure. The whole run is
bounded (BENCH_TIMEOUT, default 170 s); everything it starts is stopped and its temp dir removed, also on
failure and Ctrl-C. WORKERS, when set, is passed through to the server. BENCH_LOADGEN=python and
BENCH_STATIC=python force the fallback load generator and static server; BENCH_LOG=path keeps the
server's log (LOG_LEVEL=warning) there.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

import aiohttp
import asyncpg
import loadgen
import procs

sys.path.insert(0, str(procs.ROOT / "tests"))
from billing_helpers import account, dev_pay, invoice_for, wait_for
from nostr_helpers import auth_params

from satellite.nostr.keys import SecretKey

# This bench measures speed from one address at full tilt: rate limits so high they never refuse,
# though every request still pays for checking them (bench/abuse.py measures the limits at work).
UNLIMITED = {
    "UPLOADS_PER_IP": "999999999/second",
    "UPLOADS_PER_PUBKEY": "999999999/second",
    "MAX_CONCURRENT_UPLOADS_PER_PUBKEY": "1000",
}
MIB = 1024 * 1024
BIG = 256 * MIB
HUGE = 1024 * MIB
TAIL = 64
BIG_RUNS = 3
SMALL = 16 * 1024
SMALL_COUNT = 400
SMALL_CONCURRENCY = 16
SMALL_ACCOUNTS = 4
GET_CONCURRENCY = 32
GET_SECONDS = 3
GET_RUNS = 15  # loopback GETs of 256 MiB vary a lot from one to the next here; 3 is too few
TTFB_RUNS = 5
SEED_ROWS = 100_000
GB_MONTHS = 10
HASH_CHUNK = MIB
TARGET_UPLOAD_SHARE = 0.5
TARGET_RSS_MIB = 100
TARGET_SMALL_UPLOADS = 400
TARGET_GET_SHARE = 0.8
TARGET_SMALL_GETS = 3000
TARGET_O1 = 0.9
TOTAL_SECONDS = float(os.environ.get("BENCH_TIMEOUT", "170"))


def say(message: str) -> None:
    print(f"[{time.monotonic() - STARTED:6.1f}s] {message}", file=sys.stderr, flush=True)


STARTED = time.monotonic()


def machine_facts() -> dict:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    mem = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem = int(Path("/proc/meminfo").read_text().split()[1]) * 1024
    return {
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "cpu": model,
        "memory_gib": round(mem / 1024**3, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "workers": os.environ.get("WORKERS", ""),
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def make_file(path: Path, size: int) -> tuple[hashlib._Hash, str]:
    """Fresh random bytes; returns the sha256 state before the last TAIL bytes, and the full digest."""
    digest = hashlib.sha256()
    with path.open("wb") as handle:
        left = size - TAIL
        while left:
            block = os.urandom(min(left, 8 * MIB))
            digest.update(block)
            handle.write(block)
            left -= len(block)
        head = digest.copy()
        tail = os.urandom(TAIL)
        digest.update(tail)
        handle.write(tail)
        handle.flush()
        os.fsync(handle.fileno())  # on disk now, so its write-back does not compete with the upload
    return head, digest.hexdigest()


def new_tail(path: Path, head: hashlib._Hash) -> str:
    """Re-randomize the last TAIL bytes in place (a new blob without writing 256 MiB again)."""
    tail = os.urandom(TAIL)
    with path.open("r+b") as handle:
        handle.seek(-TAIL, os.SEEK_END)
        handle.write(tail)
        handle.flush()
        os.fsync(handle.fileno())
    digest = head.copy()
    digest.update(tail)
    return digest.hexdigest()


class Bench:
    def __init__(self, tmp: Path, cleanup: procs.Cleanup) -> None:
        self.tmp = tmp
        self.cleanup = cleanup
        self.deadline = STARTED + TOTAL_SECONDS
        self.fig: dict = {"machine": machine_facts()}
        self.notes: list[str] = []
        self.files = tmp / "files"
        self.files.mkdir()
        self.loadgen = (
            "wrk" if loadgen.find_wrk() and os.environ.get("BENCH_LOADGEN") != "python" else "python"
        )
        self.static = (
            "nginx" if procs.find_nginx() and os.environ.get("BENCH_STATIC") != "python" else "python"
        )
        self.fig["load_generator"] = "wrk" if self.loadgen == "wrk" else "python-asyncio (separate process)"
        self.fig["static_server"] = "nginx" if self.static == "nginx" else "python asyncio loop.sendfile"
        self.fig["signing"] = "a fresh kind 22242 event per request, signed in the client just before it"
        self.fig["small_upload_accounts"] = SMALL_ACCOUNTS

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def bounded(self, seconds: float) -> asyncio.Timeout:
        return asyncio.timeout(max(1.0, min(seconds, self.left())))

    # --- server and accounts ---------------------------------------------------------------------

    async def start(self) -> None:
        say("writing 256 MiB and 1 GiB of fresh random bytes")
        self.big_path, self.huge_path = self.files / "big256.bin", self.files / "big1g.bin"
        self.big_head, self.big_sha = await asyncio.to_thread(make_file, self.big_path, BIG)
        _, self.huge_sha = await asyncio.to_thread(make_file, self.huge_path, HUGE)
        say("starting satellite serve (embedded PostgreSQL)")
        started = time.perf_counter()
        proc, self.base, data_dir = await asyncio.to_thread(
            procs.start_satellite, self.tmp, self.cleanup, timeout=60, extra_env=UNLIMITED
        )
        self.fig["server_start_s"] = round(time.perf_counter() - started, 2)
        self.pgdata = data_dir / "postgres"
        self.server_proc = proc
        self.server = procs.Tree(proc.pid)
        self.postgres = procs.postgres_tree(self.pgdata)
        self.session = aiohttp.ClientSession(base_url=self.base, timeout=aiohttp.ClientTimeout(total=120))

    async def buy_credit(self) -> None:
        """Credit for every bench account through the purchase flow a Nostr web client runs."""
        self.big_key = SecretKey.generate()
        self.small_keys = [SecretKey.generate() for _ in range(SMALL_ACCOUNTS)]
        session = self.session

        async def buy(key: SecretKey) -> None:
            _, _, pr = await invoice_for(session, key, GB_MONTHS)
            resp = await dev_pay(session, pr)
            assert resp.status == 200, await resp.text()
            resp.release()

            async def credited() -> bool:
                return (await account(session, key))["creditTotal"] > 0

            await wait_for(credited, within=40)

        started = time.perf_counter()
        async with self.bounded(60):
            await asyncio.gather(*(buy(k) for k in [self.big_key, *self.small_keys]))
        self.fig["credit_purchase_s"] = round(time.perf_counter() - started, 2)
        seconds = self.fig["credit_purchase_s"]
        say(f"bought {GB_MONTHS} GB-months for {1 + SMALL_ACCOUNTS} accounts in {seconds} s")

    async def put(self, key: SecretKey, body: object, size: int, name: str) -> tuple[dict, float]:
        params = auth_params(key, "Authorize Upload", [["size", str(size)], ["name", name]])
        started = time.perf_counter()
        async with self.session.put(
            "/item", params=params, data=body, headers={"Content-Length": str(size)}
        ) as resp:
            if resp.status != 200:
                raise RuntimeError(f"PUT /item answered {resp.status}: {(await resp.text())[:300]}")
            result = await resp.json()
        return result, time.perf_counter() - started

    async def put_file(self, path: Path, size: int, expected: str) -> tuple[dict, float]:
        """Streamed from disk with sendfile on a plain socket (a Python HTTP client would be the
        bottleneck), with a freshly signed event."""
        params = auth_params(self.big_key, "Authorize Upload", [["size", str(size)], ["name", path.name]])
        url = f"{self.base}/item?{urlencode(params)}"
        status, body, seconds = await asyncio.to_thread(loadgen.raw_put_file, url, str(path), size)
        if status != 200:
            raise RuntimeError(f"PUT /item answered {status}: {body[:300]!r}")
        result = json.loads(body)
        if result["sha256"] != expected or result["size"] != size:
            raise RuntimeError(f"server stored {result['sha256']} ({result['size']} B), expected {expected}")
        return result, seconds

    def cpu(self) -> tuple[float, float, float]:
        pg = self.postgres.cpu_seconds() if self.postgres else 0.0
        return self.server.cpu_seconds(), pg, time.process_time()

    def cores(
        self, prefix: str, before: tuple[float, float, float], seconds: float, client: bool = True
    ) -> None:
        """CPU used during a phase, in cores: the server (without PostgreSQL), PostgreSQL, and this
        process (the client, unless the load came from wrk)."""
        after = self.cpu()
        for name, b, a in zip(("server", "postgres", "client"), before, after, strict=True):
            if name != "client" or client:
                self.fig[f"{prefix}_{name}_cores"] = round((a - b) / seconds, 2)

    # --- phases ----------------------------------------------------------------------------------

    async def large_upload(self) -> None:
        await asyncio.sleep(0.5)
        idle = self.server.rss()
        say("phase 1: PUT 1 GiB (sampling server RSS every 20 ms)")
        before = self.cpu()
        async with self.bounded(60):
            with procs.RssSampler(self.server, 0.02) as sampler:
                _, seconds = await self.put_file(self.huge_path, HUGE, self.huge_sha)
        self.cores("large_upload_1gib", before, seconds)
        peak = max(sampler.peak, idle)
        self.fig.update(
            large_upload_1gib_mib_s=round(HUGE / MIB / seconds, 1),
            large_upload_1gib_runs=1,
            idle_rss_mib=round(idle / MIB, 1),
            peak_rss_mib=round(peak / MIB, 1),
            peak_rss_above_idle_mib=round((peak - idle) / MIB, 1),
            rss_samples=sampler.samples,
        )
        rate, above = self.fig["large_upload_1gib_mib_s"], self.fig["peak_rss_above_idle_mib"]
        say(f"  1 GiB: {rate} MiB/s, peak RSS +{above} MiB")
        runs = []
        phase_started = time.monotonic()
        for i in range(BIG_RUNS):
            if i and (time.monotonic() - phase_started > 40 or self.left() < 90):
                self.notes.append(f"256 MiB upload: {i} of {BIG_RUNS} runs (time budget)")
                break
            if i:
                self.big_sha = await asyncio.to_thread(new_tail, self.big_path, self.big_head)
            async with self.bounded(40):
                self.big_result, seconds = await self.put_file(self.big_path, BIG, self.big_sha)
            runs.append(round(BIG / MIB / seconds, 1))
        self.fig["large_upload_256mib_mib_s"] = statistics.median(runs)
        self.fig["large_upload_256mib_runs"] = runs
        say(f"  256 MiB: {runs} MiB/s")

    async def small_uploads(self, prefix: str) -> None:
        blobs = [os.urandom(SMALL) for _ in range(SMALL_COUNT)]
        pending = list(enumerate(blobs))
        pending.reverse()
        latencies: list[float] = []
        first: dict = {}

        async def worker(w: int) -> None:
            key = self.small_keys[w % len(self.small_keys)]
            while pending:
                i, blob = pending.pop()
                result, seconds = await self.put(key, blob, SMALL, f"{prefix}-{i}.bin")
                latencies.append(seconds)
                if i == 0:
                    first.update(result, body=blob)

        phase = "phase 2" if prefix == "small" else f"phase 6 ({prefix})"
        say(f"{phase}: {SMALL_COUNT} x 16 KiB PUT at concurrency {SMALL_CONCURRENCY}")
        before = self.cpu()
        started = time.perf_counter()
        async with self.bounded(45):
            await asyncio.gather(*(worker(w) for w in range(SMALL_CONCURRENCY)))
        seconds = time.perf_counter() - started
        self.cores(f"{prefix}_upload", before, seconds)
        self.fig[f"{prefix}_upload_per_s"] = round(SMALL_COUNT / seconds, 1)
        self.fig[f"{prefix}_upload_p50_ms"] = round(percentile(latencies, 0.5) * 1e3, 2)
        self.fig[f"{prefix}_upload_p99_ms"] = round(percentile(latencies, 0.99) * 1e3, 2)
        say(f"  {self.fig[f'{prefix}_upload_per_s']} uploads/s")
        if prefix == "small":
            self.small_url = first["url"]
            (self.files / "small16k.bin").write_bytes(first["body"])

    async def hash_limits(self) -> None:
        say("phase 5: hashlib sha256 and sha1 over the 256 MiB file, and writing it with fsync, one core")
        data = await asyncio.to_thread(self.big_path.read_bytes)

        def speed(name: str, data: bytes) -> float:
            view = memoryview(data)
            best = 0.0
            for _ in range(2):
                digest = hashlib.new(name)
                started = time.perf_counter()
                for offset in range(0, len(view), HASH_CHUNK):
                    digest.update(view[offset : offset + HASH_CHUNK])
                best = max(best, BIG / MIB / (time.perf_counter() - started))
            return best

        sha256 = await asyncio.to_thread(speed, "sha256", data)
        sha1 = await asyncio.to_thread(speed, "sha1", data)

        def disk_write(data: bytes) -> float:
            """What an upload also needs: the same bytes written and fsynced on the same disk, one core,
            sustained: four times in a row (the first writes of a quiet disk are much faster)."""
            target = self.tmp / "disk-limit.bin"
            view = memoryview(data)
            started = time.perf_counter()
            for _ in range(4):
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                try:
                    for offset in range(0, len(view), HASH_CHUNK):
                        os.write(fd, view[offset : offset + HASH_CHUNK])
                    os.fsync(fd)
                finally:
                    os.close(fd)
                target.unlink()
            return 4 * BIG / MIB / (time.perf_counter() - started)

        disk = await asyncio.to_thread(disk_write, data)
        del data
        self.fig["disk_write_fsync_mib_s"] = round(disk, 1)
        self.fig["sha256_mib_s"] = round(sha256, 1)
        self.fig["sha1_mib_s"] = round(sha1, 1)
        self.fig["ingest_hash_limit_mib_s"] = round(1 / (1 / sha256 + 1 / sha1), 1)

    async def start_static(self) -> None:
        say(f"phase 5: starting the static server ({self.fig['static_server']}) on the same files")
        self.static_proc, self.static_base = await asyncio.to_thread(
            procs.start_static, self.static, self.files, self.tmp, self.cleanup, probe="/small16k.bin"
        )

    async def large_gets(self) -> None:
        """Phase 3 and its limit: full GETs of the 256 MiB blob from satellite and from the static server,
        alternated so that both see the same machine noise; then ranged GETs from the middle."""
        say(f"phase 3: GET 256 MiB (median of {GET_RUNS}, alternating with the static server); ranged GET")
        targets = {"satellite": self.big_result["url"], "static": self.static_base + "/big256.bin"}
        runs: dict[str, list[float]] = {name: [] for name in targets}
        ttfbs: dict[str, list[float]] = {name: [] for name in targets}
        middle = BIG // 2
        async with self.bounded(40):
            for i in range(GET_RUNS):
                if i >= 3 and self.left() < 90:
                    self.notes.append(f"large GET: {i} of {GET_RUNS} runs (time budget)")
                    break
                for name, url in targets.items():
                    got = await asyncio.to_thread(loadgen.raw_get, url, timeout=30)
                    if got.status != 200 or got.body_bytes != BIG:
                        raise RuntimeError(f"GET {url}: status {got.status}, {got.body_bytes} bytes")
                    runs[name].append(round(BIG / MIB / got.total_s, 1))
            for _ in range(TTFB_RUNS):
                for name, url in targets.items():
                    got = await asyncio.to_thread(
                        loadgen.raw_get,
                        url,
                        headers={"Range": f"bytes={middle}-{middle + MIB - 1}"},
                        timeout=10,
                    )
                    if got.status != 206 or got.body_bytes != MIB:
                        raise RuntimeError(f"ranged GET {url}: status {got.status}, {got.body_bytes} bytes")
                    ttfbs[name].append(got.ttfb_s * 1e3)
        for name in targets:
            self.fig[f"{name}_large_get_mib_s"] = statistics.median(runs[name])
            self.fig[f"{name}_large_get_runs"] = runs[name]
            self.fig[f"{name}_range_ttfb_ms"] = round(statistics.median(ttfbs[name]), 3)
            say(f"  {name}: {runs[name]} MiB/s; ranged TTFB {self.fig[f'{name}_range_ttfb_ms']} ms")

    async def small_get(self, url: str, prefix: str) -> None:
        before = self.cpu()
        async with self.bounded(GET_SECONDS + 20):
            load = await loadgen.small_get_load(
                url, connections=GET_CONCURRENCY, seconds=GET_SECONDS, tool=self.loadgen
            )
        if prefix != "static":
            self.cores(f"{prefix}_get", before, load.seconds, client=self.loadgen != "wrk")
        self.fig[f"{prefix}_get_req_s"] = round(load.req_per_s, 1)
        self.fig[f"{prefix}_get_p50_ms"] = round(load.p50_ms, 2)
        self.fig[f"{prefix}_get_p99_ms"] = round(load.p99_ms, 2)
        self.fig[f"{prefix}_get_requests"] = load.requests
        self.fig[f"{prefix}_get_errors"] = load.errors
        if load.errors:
            self.notes.append(f"{prefix} 16 KiB GET: {load.errors} errors or non-2xx answers")
        say(f"  {prefix} 16 KiB GET: {load.req_per_s:.0f} req/s ({load.tool})")

    async def seed(self) -> None:
        say(f"phase 6: seeding {SEED_ROWS} accounts, blobs and files in the database")
        conn = await asyncpg.connect(procs.postgres_dsn(self.pgdata), timeout=10)
        try:
            started = time.perf_counter()
            async with self.bounded(60), conn.transaction():
                await conn.execute(
                    "INSERT INTO accounts (pubkey, storage_bytes, usage_updated_at, created_at)"
                    " SELECT encode(sha256(('bench-account-' || i)::bytea), 'hex'), $2, now(), now()"
                    " FROM generate_series(1, $1) AS i",
                    SEED_ROWS,
                    SMALL,
                )
                await conn.execute(
                    "INSERT INTO blobs (sha256, size, type, ext, infohash, piece_length, pieces, created_at)"
                    " SELECT encode(sha256(('bench-blob-' || i)::bytea), 'hex'), $2::bigint,"
                    " 'application/octet-stream', 'bin',"
                    " left(encode(sha256(('bench-info-' || i)::bytea), 'hex'), 40), $2::integer,"
                    " substring(sha256(('bench-piece-' || i)::bytea) FROM 1 FOR 20), now()"
                    " FROM generate_series(1, $1) AS i",
                    SEED_ROWS,
                    SMALL,
                )
                await conn.execute(
                    "INSERT INTO files (pubkey, sha256, name, created_at)"
                    " SELECT encode(sha256(('bench-account-' || i)::bytea), 'hex'),"
                    " encode(sha256(('bench-blob-' || i)::bytea), 'hex'), 'seed-' || i || '.bin', now()"
                    " FROM generate_series(1, $1) AS i",
                    SEED_ROWS,
                )
            self.fig["seed_s"] = round(time.perf_counter() - started, 2)
            # Settle, as a server holding these rows for a while would be: no autovacuum or checkpoint of
            # the fresh rows running during the measurement.
            await conn.execute("VACUUM ANALYZE accounts, blobs, files")
            await conn.execute("CHECKPOINT")
            await asyncio.to_thread(os.sync)
            self.fig["seeded_rows"] = SEED_ROWS
            self.fig["seeding"] = (
                "one INSERT ... SELECT generate_series per table; VACUUM ANALYZE; CHECKPOINT; sync"
            )
            self.fig["seed_settle_s"] = round(time.perf_counter() - started - self.fig["seed_s"], 2)
            counts = await conn.fetchrow(
                "SELECT (SELECT count(*) FROM accounts) AS accounts, (SELECT count(*) FROM files) AS files"
            )
            self.fig["rows_after_seed"] = dict(counts)
        finally:
            await conn.close()

    async def run(self) -> None:
        await self.start()
        try:
            await self.buy_credit()
            await self.large_upload()
            await self.small_uploads("small")
            await self.start_static()
            await self.large_gets()
            say(f"phase 4: 16 KiB GET, c={GET_CONCURRENCY}, {GET_SECONDS} s, then on the static server")
            await self.small_get(self.small_url, "small")
            await self.small_get(self.static_base + "/small16k.bin", "static")
            await asyncio.to_thread(procs.stop_process, self.static_proc, grace=5)
            await self.hash_limits()
            say("phase 6: phases 2 and 4 once more before seeding (run-to-run noise), then seed, then again")
            await self.small_uploads("repeat")
            await self.small_get(self.small_url, "repeat")
            await self.seed()
            await self.small_uploads("seeded")
            await self.small_get(self.small_url, "seeded")
        finally:
            await self.session.close()


# --- report -----------------------------------------------------------------------------------------


def ratio(value: float | None, limit: float | None) -> float | None:
    if value is None or not limit:
        return None
    return round(value / limit, 3)


def report(fig: dict, notes: list[str]) -> None:
    """The table: each figure, the limit it is held against, the ratio, the target and whether it is met."""
    g = fig.get
    hash_limit = g("ingest_hash_limit_mib_s")
    static = "nginx" if g("static_server") == "nginx" else "static"
    rows: list[tuple[str, str, object, str, float | None, str, bool | None]] = []

    def row(
        phase: str, figure: str, value: object, limit: object = None, text: str = "", target=None
    ) -> None:
        """`target` is (label, predicate on the ratio), or None for a figure without one."""
        r = ratio(value, limit) if isinstance(value, int | float) and isinstance(limit, int | float) else None
        ok = None if target is None or r is None else target[1](r)
        label = "" if target is None else target[0]
        rows.append((phase, figure, value, text or ("" if limit is None else str(limit)), r, label, ok))

    at_least = {
        x: (f"≥ {x:.2f}", lambda r, x=x: r >= x) for x in (TARGET_UPLOAD_SHARE, TARGET_GET_SHARE, 1.0)
    }
    below_one = ("< 1.00", lambda r: r < 1)
    o1 = (f"≥ {TARGET_O1:.2f}", lambda r: r >= TARGET_O1)
    big_runs = len(g("large_upload_256mib_runs") or [])
    get_runs = len(g("satellite_large_get_runs") or [])
    hash_text = f"{hash_limit} hash 1-pass"

    row("1 large upload", f"PUT 256 MiB, MiB/s (median of {big_runs})", g("large_upload_256mib_mib_s"),
        hash_limit, hash_text, at_least[TARGET_UPLOAD_SHARE])  # fmt: skip
    row("1 large upload", "PUT 1 GiB, MiB/s (1 run)", g("large_upload_1gib_mib_s"),
        hash_limit, hash_text, at_least[TARGET_UPLOAD_SHARE])  # fmt: skip
    disk = g("disk_write_fsync_mib_s")
    row("1 large upload", "  PUT 256 MiB against the disk's write+fsync", g("large_upload_256mib_mib_s"),
        disk, f"{disk} disk")  # fmt: skip
    row("1 large upload", "peak RSS above idle, 1 GiB PUT, MiB", g("peak_rss_above_idle_mib"),
        TARGET_RSS_MIB, f"{TARGET_RSS_MIB} MiB", below_one)  # fmt: skip
    row("2 small uploads", f"16 KiB PUT/s, concurrency {SMALL_CONCURRENCY}", g("small_upload_per_s"),
        TARGET_SMALL_UPLOADS, f"{TARGET_SMALL_UPLOADS}/s target", at_least[1.0])  # fmt: skip
    row(
        "2 small uploads",
        "  latency p50 / p99, ms",
        f"{g('small_upload_p50_ms')} / {g('small_upload_p99_ms')}",
    )
    static_get = g("static_large_get_mib_s")
    row("3 large download", f"GET 256 MiB, MiB/s (median of {get_runs})", g("satellite_large_get_mib_s"),
        static_get, f"{static_get} {static}", at_least[TARGET_GET_SHARE])  # fmt: skip
    row("3 large download", "ranged GET mid, TTFB ms (lower=better)", g("satellite_range_ttfb_ms"),
        g("static_range_ttfb_ms"), f"{g('static_range_ttfb_ms')} {static}")  # fmt: skip
    row("4 small downloads", f"16 KiB GET req/s, c={GET_CONCURRENCY}, {GET_SECONDS} s", g("small_get_req_s"),
        TARGET_SMALL_GETS, f"{TARGET_SMALL_GETS}/s target", at_least[1.0])  # fmt: skip
    row("4 small downloads", "  same, against the static server", g("small_get_req_s"),
        g("static_get_req_s"), f"{g('static_get_req_s')} {static}")  # fmt: skip
    row("4 small downloads", "  latency p50 / p99, ms", f"{g('small_get_p50_ms')} / {g('small_get_p99_ms')}",
        text=f"{g('static_get_p50_ms')} / {g('static_get_p99_ms')} {static}")  # fmt: skip
    row("5 limits", "sha256, 1 core, MiB/s", g("sha256_mib_s"))
    row("5 limits", "sha1, 1 core, MiB/s", g("sha1_mib_s"))
    row("5 limits", "sha256+sha1 one pass, MiB/s", hash_limit)
    row("5 limits", "disk: write + fsync 4 x 256 MiB in a row, MiB/s", disk)
    row("5 limits", f"{static}: GET 256 MiB, MiB/s (median of {get_runs})", g("static_large_get_mib_s"))
    row("5 limits", f"{static}: 16 KiB GET req/s", g("static_get_req_s"))
    for kind, unit in (("upload", "PUT/s"), ("get", "GET req/s")):
        key = "per_s" if kind == "upload" else "req_s"
        first, repeat, after = (g(f"{run}_{kind}_{key}") for run in ("small", "repeat", "seeded"))
        before = None if first is None or repeat is None else round((first + repeat) / 2, 1)
        row("6 after 100k rows", f"16 KiB {unit}, after / before", after, before,
            f"{before} before (mean of 2)", o1)  # fmt: skip
        row("6 after 100k rows", f"  noise before, {unit}: 2nd / 1st run", repeat, first, f"{first} 1st run")
    row(
        "6 after 100k rows",
        "  p99 after: PUT / GET, ms",
        f"{g('seeded_upload_p99_ms')} / {g('seeded_get_p99_ms')}",
    )

    ratios = fig.setdefault("ratios", {})
    for phase, figure, _, _, r, _, _ in rows:
        if r is not None:
            ratios[f"{phase[2:]}: {figure.strip()}"] = r
    headers = ("phase", "figure", "value", "limit", "ratio", "target", "met")
    cells = [
        (
            p,
            f,
            "-" if v is None else str(v),
            t,
            "" if r is None else f"{r:.3f}",
            tg,
            {None: "", True: "yes"}.get(ok, "NO"),
        )
        for p, f, v, t, r, tg, ok in rows
    ]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    print(line)
    print("-" * len(line))
    for c in cells:
        print("  ".join(x.ljust(w) for x, w in zip(c, widths, strict=True)).rstrip())
    for note in notes:
        print(f"note: {note}")


def header(fig: dict) -> str:
    m = fig["machine"]
    workers = m["workers"] or "unset"
    return (
        f"satellite bench: {m['cores']} cores ({m['usable_cores']} usable), {m['cpu']},"
        f" {m['memory_gib']} GiB RAM, Linux {m['kernel']}, Python {m['python']}, aiohttp {m['aiohttp']};"
        f" server WORKERS={workers}; load generator: {fig['load_generator']};"
        f" static server: {fig['static_server']}; auth: {fig['signing']}"
    )


def main() -> int:
    return procs.drive(
        name="bench",
        total_seconds=TOTAL_SECONDS,
        keep_log_env="BENCH_LOG",
        make=Bench,
        run=lambda bench: bench.run(),
        server=lambda bench: getattr(bench, "server_proc", None),
        header=header,
        report=report,
        say=say,
        started=STARTED,
    )


if __name__ == "__main__":
    sys.exit(main())
