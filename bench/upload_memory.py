"""Peak server RSS during one large streamed upload (default 1 GiB), against its idle RSS.

Starts `satellite serve` on embedded defaults in a temp dir, uploads random bytes streamed from a temp
file with a signed event, samples the server process's RSS every 20 ms, and prints a table and a final
JSON line. Usage: python bench/upload_memory.py [size_MiB]
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from nostr_helpers import auth_params  # noqa: E402

from satellite.nostr.keys import SecretKey  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(base: str, proc: subprocess.Popen) -> None:
    for _ in range(600):
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.returncode}")
        try:
            urllib.request.urlopen(base + "/health", timeout=1)
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("server did not start")


def start_server(env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "satellite", "serve"], env=env, cwd=ROOT)


def make_file(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with path.open("wb") as handle:
        left = size
        while left:
            block = os.urandom(min(left, 8 * 1024 * 1024))
            digest.update(block)
            handle.write(block)
            left -= len(block)
    return digest.hexdigest()


async def sample(process: psutil.Process, stop: asyncio.Event, peak: list[int]) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], process.memory_info().rss)
        await asyncio.sleep(0.02)


async def upload(base: str, path: Path, size: int) -> dict:
    params = auth_params(SecretKey.generate(), "Authorize Upload", [["size", str(size)], ["name", "big.bin"]])
    async with aiohttp.ClientSession() as session:
        with path.open("rb") as handle:
            async with session.put(
                f"{base}/item", params=params, data=handle, headers={"Content-Length": str(size)}
            ) as resp:
                resp.raise_for_status()
                return await resp.json()


async def main(size_mib: int) -> None:
    size = size_mib * 1024 * 1024
    with tempfile.TemporaryDirectory(prefix="satellite-bench-") as tmp:
        tmp_path = Path(tmp)
        source = tmp_path / "source.bin"
        expected = make_file(source, size)
        port = free_port()
        env = {**os.environ, "PORT": str(port), "DATA_DIR": str(tmp_path / "data"), "LOG_LEVEL": "warning"}
        env.pop("DATABASE_URL", None)
        proc = start_server(env)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_ready(base, proc)
            server = psutil.Process(proc.pid)
            await asyncio.sleep(0.5)
            idle = server.memory_info().rss
            peak = [idle]
            stop = asyncio.Event()
            sampler = asyncio.create_task(sample(server, stop, peak))
            started = time.perf_counter()
            result = await upload(base, source, size)
            elapsed = time.perf_counter() - started
            stop.set()
            await sampler
            assert result["sha256"] == expected, "server computed a different sha256"
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    mib = 1024 * 1024
    figures = {
        "upload_mib": size_mib,
        "idle_rss_mib": round(idle / mib, 1),
        "peak_rss_mib": round(peak[0] / mib, 1),
        "peak_above_idle_mib": round((peak[0] - idle) / mib, 1),
        "upload_mib_per_s": round(size_mib / elapsed, 1),
    }
    for key, value in figures.items():
        print(f"{key:24} {value}")
    print(json.dumps(figures))


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 1024))
