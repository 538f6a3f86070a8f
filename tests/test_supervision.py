"""Background tasks under supervision, and the settlement watcher's faults: a task that raises is logged
with its traceback and comes back; readiness names a task that keeps failing; a node's odd answers
(a malformed preimage, no amount) never stop billing and never settle a paid invoice as underpaid."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import time

from billing_helpers import account, dev_pay, invoice_for, wait_for
from nostr_helpers import auth_params

from satellite.nostr.keys import SecretKey
from satellite.supervisor import Supervisor


class Flaky:
    """A background job that raises its first `failures` runs, then works (runs until cancelled)."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.runs = 0
        self.working = asyncio.Event()

    async def __call__(self) -> None:
        self.runs += 1
        if self.runs <= self.failures:
            raise ValueError(f"run {self.runs} broke")
        self.working.set()
        await asyncio.Event().wait()


async def test_a_task_that_raises_is_restarted_with_backoff_and_recovers(capsys):
    supervisor = Supervisor(base_backoff=0.01, max_backoff=0.05, stable_after=0.2, failing_after=3)
    job = Flaky(failures=4)
    supervisor.start("flaky job", job)
    try:
        await asyncio.wait_for(job.working.wait(), 5)
        state = supervisor.states()["flaky job"]
        assert job.runs == 5 and state.restarts == 4
        assert supervisor.failing() == ["flaky job"]  # four failures in a row
        assert state.last_error == "ValueError: run 4 broke"
        await wait_for(lambda: asyncio.sleep(0, supervisor.states()["flaky job"].failures == 0), within=5)
        assert supervisor.failing() == []
    finally:
        await supervisor.stop()
    logged = capsys.readouterr().out
    assert logged.count("background task failed; restarting") == 4  # once per failure
    assert logged.count("Traceback (most recent call last)") == 4
    assert "ValueError: run 1 broke" in logged
    assert "background task recovered" in logged


async def test_a_task_that_returns_is_restarted_too():
    supervisor = Supervisor(base_backoff=0.01, stable_after=10)
    ran = asyncio.Queue()

    async def returns() -> None:
        await ran.put(None)

    supervisor.start("returns", returns)
    try:
        for _ in range(3):
            await asyncio.wait_for(ran.get(), 5)
        assert "returned" in (supervisor.states()["returns"].last_error or "")
    finally:
        await supervisor.stop()


async def test_stop_cancels_running_tasks():
    supervisor = Supervisor()
    job = Flaky(failures=0)
    supervisor.start("job", job)
    await asyncio.wait_for(job.working.wait(), 5)
    await supervisor.stop()
    assert supervisor.states()["job"].running is False


async def upload(client, key, body: bytes):
    data = io.BytesIO(body)
    return await client.put("/item", params=auth_params(key, "Authorize Upload"), data=data)


async def _readiness(client) -> tuple[int, dict]:
    resp = await client.get("/readyz")
    return resp.status, await resp.json()


async def test_readiness_reports_a_watcher_that_keeps_failing_and_billing_resumes(
    make_client, settings, user, db, capsys
):
    client = await make_client(settings)
    status, body = await _readiness(client)
    assert status == 200, body
    assert body["tasks"]["settlement watcher"]["running"] is True
    # A broken schema (say, a process of another version migrated it): every run of the watcher fails.
    # A payment makes the watcher store its stream cursor, whenever it had read it.
    _, _, first = await invoice_for(client, user, 1)
    await db.execute("ALTER TABLE lightning_cursors RENAME TO lightning_cursors_elsewhere")
    try:
        assert (await dev_pay(client, first)).status == 200

        async def unready():
            status, body = await _readiness(client)
            return body if status == 503 else None

        body = await wait_for(unready, within=20)
        assert "settlement watcher keeps failing" in body["reason"]
        assert "lightning_cursors" in body["tasks"]["settlement watcher"]["last_error"]
        assert body["database"] == "ok" and body["storage"] == "ok"
        logged = capsys.readouterr().out
        assert "background task failed; restarting" in logged
        assert "UndefinedTableError" in logged and "Traceback" in logged
    finally:  # repaired (also if the test fails: the tables are shared by the session)
        await db.execute("ALTER TABLE lightning_cursors_elsewhere RENAME TO lightning_cursors")
    # The watcher comes back by itself, and a payment made now is credited.
    _, _, pr = await invoice_for(client, user, 1)
    assert (await dev_pay(client, pr)).status == 200

    async def credited():
        return (await account(client, user))["creditTotal"] == 2

    await wait_for(credited, within=30)


@contextlib.asynccontextmanager
async def node_reports(db, assignment: str):
    """The dev node records every payment with `assignment` applied to it (a plpgsql statement on NEW),
    as a faulty node would report it."""
    await db.execute(
        f"CREATE FUNCTION misreport() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN {assignment}; RETURN NEW;"
        " END $$; CREATE TRIGGER misreport BEFORE UPDATE ON dev_invoices FOR EACH ROW"
        " EXECUTE FUNCTION misreport()"
    )
    try:
        yield
    finally:
        await db.execute("DROP TRIGGER misreport ON dev_invoices; DROP FUNCTION misreport()")


async def credit_reaches(client, user, gb_months: int) -> None:
    async def credited():
        return (await account(client, user))["creditTotal"] == gb_months

    await wait_for(credited, within=15)


async def test_a_malformed_preimage_is_left_out_and_billing_goes_on(make_client, settings, user, db, capsys):
    client = await make_client(settings.model_copy(update={"settlement_poll_seconds": 0.2}))
    _, _, pr = await invoice_for(client, user, 1)
    async with node_reports(db, "NEW.preimage := 'zz-not-hex'"):
        assert (await dev_pay(client, pr)).status == 200
        await credit_reaches(client, user, 1)
    [tx] = (await account(client, user))["transactions"]
    assert not any(tag[0] == "preimage" for tag in tx["receipt"]["tags"])
    assert "not this invoice's" in capsys.readouterr().out
    # And the watcher is still there for the next payment.
    _, _, pr = await invoice_for(client, user, 2)
    assert (await dev_pay(client, pr)).status == 200
    await credit_reaches(client, user, 3)
    status, body = await _readiness(client)
    assert status == 200, json.dumps(body)


async def test_a_payment_reported_without_its_amount_waits_instead_of_being_underpaid(
    make_client, settings, user, db, capsys
):
    client = await make_client(settings.model_copy(update={"settlement_poll_seconds": 0.2}))
    _, _, pr = await invoice_for(client, user, 1)
    async with node_reports(db, "NEW.amount_received_msat := NULL"):
        assert (await dev_pay(client, pr)).status == 200

        async def noticed():
            return "not the amount received" in capsys.readouterr().out

        await wait_for(noticed, within=15)
        await wait_for(noticed, within=15)  # asked again by a later poll, still without an answer
        assert await db.fetchval("SELECT status FROM offers") == "invoiced"
        assert (await account(client, user))["creditTotal"] == 0
    # The node knows the amount again: the payment is credited.
    await db.execute("UPDATE dev_invoices SET amount_received_msat = amount_msat WHERE bolt11 = $1", pr)
    await credit_reaches(client, user, 1)
    assert await db.fetchval("SELECT status FROM offers") == "paid"


async def test_an_invoice_the_node_reports_absurdly_holds_up_no_other(make_client, settings, db, capsys):
    client = await make_client(settings.model_copy(update={"settlement_poll_seconds": 0.2}))
    poisoned, fine = SecretKey.generate(), SecretKey.generate()
    _, _, first = await invoice_for(client, poisoned, 1)
    _, _, second = await invoice_for(client, fine, 1)
    # The node says the first was paid in the year 20000: no date type can even read that back.
    async with node_reports(db, "NEW.settled_at := '20000-01-01'"):
        assert (await dev_pay(client, first)).status == 200
    assert (await dev_pay(client, second)).status == 200
    await credit_reaches(client, fine, 1)
    assert (await account(client, poisoned))["creditTotal"] == 0
    assert await db.fetchval("SELECT status FROM offers WHERE bolt11 = $1", first) == "invoiced"
    assert "checking one open invoice failed" in capsys.readouterr().out


async def test_a_node_clock_ahead_of_ours_never_advances_the_meter_into_the_future(
    make_client, settings, user, db
):
    client = await make_client(settings.model_copy(update={"free_storage_bytes": 0}))
    _, _, pr = await invoice_for(client, user, 1)
    assert (await dev_pay(client, pr)).status == 200
    await credit_reaches(client, user, 1)
    assert (await upload(client, user, os.urandom(5_000_000))).status == 200
    _, _, pr = await invoice_for(client, user, 1)
    async with node_reports(db, "NEW.settled_at := now() + interval '1 day'"):
        assert (await dev_pay(client, pr)).status == 200
        await credit_reaches(client, user, 2)
    acct = await account(client, user)
    # A day of 5 MB would be 1.7e-4 GB-months; what has really been stored is seconds' worth.
    assert acct["usageTotal"] < 1e-6, acct["usageTotal"]
    receipt = acct["transactions"][-1]["receipt"]
    assert receipt["created_at"] <= time.time() + 1
