"""Spool files of uploads cut off by a killed process never outlive it: a restart removes every spool no
live process holds, and a running server removes those that another, dead, process left behind, while
the uploads it is receiving itself carry on."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import urllib.parse
from pathlib import Path

from billing_helpers import wait_for
from nostr_helpers import auth_params
from processes import free_port, server_env, start, wait_ready

from satellite.nostr.keys import SecretKey

BODY_BYTES = 6_000_000
SENT_FIRST = 2_000_000  # more than fits in memory: the upload is on disk as a spool


def spools(data_dir: Path) -> set[Path]:
    staging = data_dir / "blobs" / "tmp"
    return set(staging.glob(".upload-*")) if staging.exists() else set()


class PartialUpload:
    """A PUT /item whose body is sent in two parts, over a raw connection."""

    def __init__(self, base: str, body: bytes) -> None:
        self.base = base
        self.body = body

    async def send_first_part(self) -> None:
        url = urllib.parse.urlsplit(self.base)
        query = urllib.parse.urlencode(auth_params(SecretKey.generate(), "Authorize Upload"))
        self.reader, self.writer = await asyncio.open_connection(url.hostname, url.port)
        head = (
            f"PUT /item?{query} HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Length: {len(self.body)}\r\n"
            "Connection: close\r\n\r\n"
        )
        self.writer.write(head.encode() + self.body[:SENT_FIRST])
        await self.writer.drain()

    async def finish(self) -> tuple[int, dict]:
        self.writer.write(self.body[SENT_FIRST:])
        await self.writer.drain()
        response = await asyncio.wait_for(self.reader.read(), 30)
        await self.close()
        head, _, body = response.partition(b"\r\n\r\n")
        return int(head.split()[1]), json.loads(body)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


async def a_new_spool(data_dir: Path, before: set[Path]) -> Path:
    """The spool that appears (with some of the first part written) after `before` was listed."""

    async def appeared():
        new = [p for p in spools(data_dir) - before if p.exists() and p.stat().st_size > 0]
        return new[0] if new else None

    return await wait_for(appeared, within=20)


def env_for(database_url: str, data_dir: Path, port: int, **more: str) -> dict[str, str]:
    return server_env(
        PORT=str(port),
        DATA_DIR=str(data_dir),
        DATABASE_URL=database_url,
        FREE_STORAGE_BYTES=str(10**12),
        LOG_FORMAT="json",
        **more,
    )


async def test_a_restart_after_kill_9_mid_upload_leaves_no_spool(database_url, db, tmp_path):
    data_dir = tmp_path / "data"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = env_for(database_url, data_dir, port)
    proc = start(env)
    try:
        await asyncio.to_thread(wait_ready, base, proc)
        upload = PartialUpload(base, os.urandom(BODY_BYTES))
        await upload.send_first_part()
        spool = await a_new_spool(data_dir, set())
    finally:
        proc.kill()  # kill -9: no clean-up of any kind runs
        proc.communicate(timeout=30)
    await upload.close()
    assert spool.exists()  # what the kill left behind
    proc = start(env)
    try:
        await asyncio.to_thread(wait_ready, base, proc)
        assert spools(data_dir) == set()
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert "removed unfinished uploads left by dead processes" in err.decode()
    assert await db.fetchval("SELECT count(*) FROM blobs") == 0


async def test_a_running_server_sweeps_the_spools_of_a_killed_sibling_and_keeps_its_own(
    database_url, db, tmp_path
):
    data_dir = tmp_path / "shared"  # one staging dir, as for workers on one host
    ports = [free_port(), free_port()]
    bases = [f"http://127.0.0.1:{p}" for p in ports]
    procs = [start(env_for(database_url, data_dir, p, SPOOL_SWEEP_SECONDS="0.3")) for p in ports]
    try:
        for base, proc in zip(bases, procs, strict=True):
            await asyncio.to_thread(wait_ready, base, proc)
        body = os.urandom(BODY_BYTES)
        survivor = PartialUpload(bases[1], body)
        await survivor.send_first_part()
        own = await a_new_spool(data_dir, set())
        doomed = PartialUpload(bases[0], os.urandom(BODY_BYTES))
        await doomed.send_first_part()
        orphan = await a_new_spool(data_dir, {own})
        procs[0].kill()
        procs[0].communicate(timeout=30)
        await doomed.close()

        async def swept():
            return not orphan.exists()

        await wait_for(swept, within=20)
        assert own.exists()  # sweeps ran while it was open, and left it alone
        status, stored = await survivor.finish()
        assert status == 200, stored
        assert stored["sha256"] == hashlib.sha256(body).hexdigest()
        assert spools(data_dir) == set()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.communicate(timeout=30)
