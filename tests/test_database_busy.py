"""When every pooled connection is taken, a request waits a bounded time and is answered 503 with
Retry-After, instead of hanging; the server recovers as soon as connections free up."""

from __future__ import annotations

import asyncio

from billing_helpers import account
from nostr_helpers import auth_params

from satellite.nostr.keys import SecretKey


async def test_an_exhausted_pool_answers_503_with_retry_after(make_client, settings, db):
    client = await make_client(settings.model_copy(update={"database_acquire_timeout_seconds": 0.5}))
    keys = [SecretKey.generate() for _ in range(12)]
    async with db.transaction():
        # Every request spends its auth event first: while this lock is held, each one that got a
        # connection keeps it, waiting; the pool has four.
        await db.execute("LOCK TABLE auth_events IN ACCESS EXCLUSIVE MODE")
        calls = [
            asyncio.ensure_future(client.get("/account", params=auth_params(key, "Authenticate User")))
            for key in keys
        ]
        done, _ = await asyncio.wait(calls, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        assert done, "no request was answered while the pool was exhausted"
        busy = [task.result() for task in done]
        for resp in busy:
            assert resp.status == 503
            assert resp.headers["Retry-After"].isdigit()
            body = await resp.json()
            assert body["reason"] == resp.headers["X-Reason"] == "the server is busy: try again shortly"
    # The lock is gone: the requests that held connections finish, and the server serves as before.
    answers = await asyncio.wait_for(asyncio.gather(*calls), 10)
    assert {r.status for r in answers} <= {200, 503}
    assert sum(r.status == 200 for r in answers) >= 1
    assert (await account(client, SecretKey.generate()))["storageTotal"] == 0
