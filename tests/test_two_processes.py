"""Two server processes on one database and one bucket: nothing assumes a single process."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess

import aiohttp
import pytest
import s3_helpers
from billing_helpers import sign_payment, wait_for
from nostr_helpers import auth_params
from processes import free_port, wait_ready
from processes import start as start_server
from s3_helpers import ACCESS_KEY, SECRET_KEY, admin_client, new_bucket

from satellite.nostr.keys import SecretKey

moto_url = s3_helpers.moto_url
aws_sandbox = s3_helpers.aws_sandbox


@pytest.fixture
def two_servers(database_url, moto_url, aws_sandbox, tmp_path, db):
    bucket = new_bucket(moto_url)
    shared = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "DATABASE_URL"))},
        "DATABASE_URL": database_url,
        "DATA_DIR": str(tmp_path / "shared"),  # the same service key and dev-node key for both
        "STORAGE_BACKEND": "s3",
        "S3_BUCKET": bucket,
        "S3_ENDPOINT_URL": moto_url,
        "S3_ACCESS_KEY_ID": ACCESS_KEY,
        "S3_SECRET_ACCESS_KEY": SECRET_KEY,
        "S3_ADDRESSING_STYLE": "path",
        "FREE_STORAGE_BYTES": "0",
        "SETTLEMENT_POLL_SECONDS": "0.5",
        "LOG_LEVEL": "warning",
    }
    ports = [free_port(), free_port()]
    procs = []
    bases = []
    try:
        for port in ports:
            base = f"http://127.0.0.1:{port}"
            procs.append(
                start_server({**shared, "PORT": str(port), "PUBLIC_URL": base}, stdout=subprocess.DEVNULL)
            )
            bases.append(base)
        for base, proc in zip(bases, procs, strict=True):
            wait_ready(base, proc)
        yield bases, bucket
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.communicate(timeout=30)


async def account(session, base: str, key: SecretKey) -> dict:
    async with session.get(f"{base}/account", params=auth_params(key, "Authenticate User")) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def test_two_processes_one_blob_one_credit(two_servers, moto_url, db):
    (a, b), bucket = two_servers
    user = SecretKey.generate()
    async with aiohttp.ClientSession() as session:
        # Offer from one process, invoice from the other, paid through the first: credited once.
        async with session.get(
            f"{a}/account/credit", params=auth_params(user, "Request Storage", [["gb_months", "1"]])
        ) as resp:
            offer = await resp.json()
        payment = sign_payment(user, offer["payment"])
        async with session.get(
            f"{b}/lnurl/callback", params={"amount": str(offer["amount"]), "nostr": payment}
        ) as resp:
            assert resp.status == 200, await resp.text()
            pr = (await resp.json())["pr"]
        async with session.post(f"{a}/dev/pay", json={"bolt11": pr}) as resp:
            assert resp.status == 200

        async def credited():
            return (await account(session, b, user))["creditTotal"] > 0

        await wait_for(credited, within=20)
        # The leading watcher has also followed the dev node's stream past this payment (and the
        # other process does not lead): nothing can credit it again.
        index = await db.fetchval("SELECT settle_index FROM dev_invoices WHERE bolt11 = $1", pr)

        async def seen() -> bool:
            cursor = await db.fetchval("SELECT cursor FROM lightning_cursors WHERE backend = 'dev'")
            return cursor is not None and int(cursor) >= index

        await wait_for(seen, within=20)
        for base in (a, b):
            acct = await account(session, base, user)
            assert acct["creditTotal"] == 1 and len(acct["transactions"]) == 1

        # The same blob uploaded at once through both processes, by the same owner and by another.
        body = os.urandom(300_000)
        sha = hashlib.sha256(body).hexdigest()
        other = SecretKey.generate()
        await db.execute(
            "INSERT INTO accounts (pubkey, credit_byte_seconds, usage_updated_at, created_at)"
            " VALUES ($1, $2, now(), now())",
            other.pubkey,
            10**18,
        )

        async def put(base: str, key: SecretKey) -> int:
            async with session.put(
                f"{base}/item", params=auth_params(key, "Authorize Upload"), data=body
            ) as resp:
                return resp.status

        statuses = await asyncio.gather(put(a, user), put(b, user), put(a, other), put(b, other))
        assert statuses == [200, 200, 200, 200]
        assert await db.fetchval("SELECT count(*) FROM blobs") == 1
        assert await db.fetchval("SELECT count(*) FROM files") == 2
        keys = [o["Key"] for o in admin_client(moto_url).list_objects_v2(Bucket=bucket).get("Contents", [])]
        assert keys == [sha]
        for key in (user, other):
            assert (await account(session, a, key))["storageTotal"] == len(body)
        async with session.get(f"{b}/{sha}") as resp:
            assert resp.status == 200 and await resp.read() == body
