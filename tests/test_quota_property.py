"""The quota rule, checked against the SQL that enforces it.

Random histories of uploads (new bytes and re-uploads), deletes, credits and the passing of time run
through the real upload and delete services on PostgreSQL; steps made of several operations run
concurrently. A model in Python, built on `AccountPolicy`, predicts every decision of a step that runs
alone, down to the shortfall a refusal reports. Whatever the interleaving, the account never stores
more than the rule allows, its stored total is the sum of its files, and its usage never decreases.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from satellite import items
from satellite.billing import metering
from satellite.billing.policy import AccountPolicy
from satellite.db import accounts
from satellite.db.pool import create_pool
from satellite.errors import NotOwned, QuotaExceeded
from satellite.ingest import in_memory
from satellite.storage.local import LocalStorage

PUBKEY = "c" * 64
START = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.fixture
async def pool(database_url, db):
    pool = await create_pool(database_url, max_size=6)
    yield pool
    await pool.close()


@pytest.fixture
def storage(tmp_path):
    (tmp_path / "blobs" / "tmp").mkdir(parents=True)
    return LocalStorage(tmp_path / "blobs", tmp_path / "blobs" / "tmp")


async def each_waiting_or_done(db, tasks: list[asyncio.Task]) -> None:
    """Until every task has finished or its session waits on a lock (`db` may be in a transaction,
    which would otherwise see a single snapshot of the activity statistics)."""
    query = (
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
    )
    async with asyncio.timeout(10):
        while True:
            await db.execute("SELECT pg_stat_clear_snapshot()")
            if await db.fetchval(query) + sum(t.done() for t in tasks) >= len(tasks):
                return
            await asyncio.sleep(0.005)


def content(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


@dataclass
class Model:
    """The account as the rule says it must be."""

    policy: AccountPolicy
    credit: Decimal = Decimal(0)
    usage: Decimal = Decimal(0)
    stored: int = 0
    since: datetime = START
    files: dict[str, int] = field(default_factory=dict)

    def at(self, now: datetime) -> None:
        self.usage = metering.advance(
            self.usage, self.stored, self.since, now, free_bytes=self.policy.free_bytes
        )
        self.since = max(self.since, now)

    def shortfall(self, sha: str, size: int) -> Decimal:
        if sha in self.files:
            return Decimal(0)  # a re-upload adds no bytes
        balance = self.policy.balance(self.credit, self.usage, self.stored)
        return self.policy.shortfall(balance, size)

    def within_the_rule(self) -> bool:
        balance = self.policy.balance(self.credit, self.usage, self.stored)
        return self.policy.shortfall(balance, 0) == 0


# One operation: ("upload", seed, size) new bytes, or ("upload", -k, 0) the k-th owned file again;
# ("delete", k) the k-th owned file; ("credit", byte_seconds); ("wait", seconds).
ops = st.one_of(
    st.tuples(st.just("upload"), st.integers(0, 10**6), st.integers(1, 6000)),
    st.tuples(st.just("upload"), st.integers(-5, -1), st.just(0)),
    st.tuples(st.just("delete"), st.integers(0, 5)),
    st.tuples(st.just("credit"), st.one_of(st.integers(1, 10**9), st.integers(1, 10**12))),
    st.tuples(st.just("wait"), st.one_of(st.integers(0, 3600), st.integers(0, 10**7))),
)
steps = st.lists(st.lists(ops, min_size=1, max_size=4), min_size=1, max_size=12)
policies = st.builds(
    AccountPolicy,
    free_bytes=st.sampled_from([0, 1000, 6000]),
    min_prepaid_seconds=st.sampled_from([1, 3600, 86_400, 2_592_000]),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(policy=policies, history=steps)
# Two uploads that each fit the allowance, but not both; then the same against credit.
@example(policy=AccountPolicy(6000, 1), history=[[("upload", 1, 4000), ("upload", 2, 4000)]])
@example(
    policy=AccountPolicy(0, 86_400),
    history=[[("credit", 4000 * 86_400)], [("upload", 1, 3000), ("upload", 2, 3000), ("delete", 0)]],
)
async def test_no_interleaving_stores_more_than_the_rule_allows(
    db, pool, storage, examples_seen, policy, history
) -> None:
    examples_seen.want = 40
    examples_seen.append(history)
    await db.execute("TRUNCATE files, blobs, accounts CASCADE")
    await accounts.ensure(db, PUBKEY, START)
    model = Model(policy)
    now = START
    seen_usage = Decimal(0)

    def resolve(step: list[tuple]) -> list[tuple]:
        """The step's operations on concrete files. A file deleted in a step is not also re-uploaded in
        it: which of the two commits first decides whether it stays, and the model could not know."""
        owned = sorted(model.files)
        deleted = {owned[op[1] % len(owned)] for op in step if op[0] == "delete" and owned}
        actions = []
        for op in step:
            if op[0] == "upload" and op[1] >= 0:
                actions.append(("upload", in_memory(content(op[1], op[2]))))
            elif op[0] == "upload" and owned:
                sha = owned[(-op[1] - 1) % len(owned)]
                actions.append(("upload", in_memory(storage.path_for(sha).read_bytes())))
            elif op[0] == "delete" and owned:
                actions.append(("delete", owned[op[1] % len(owned)]))
            elif op[0] == "credit":
                actions.append(("credit", op[1]))
        return [a for a in actions if a[0] != "upload" or a[1].sha256 not in deleted]

    async def run(action: tuple) -> tuple[str, object]:
        kind, what = action
        if kind == "upload":
            try:
                await items.store_upload(
                    pool=pool,
                    storage=storage,
                    spooled=what,
                    pubkey=PUBKEY,
                    name=None,
                    label=None,
                    now=now,
                    policy=policy,
                )
            except QuotaExceeded as exc:
                return ("refused", (what.sha256, what.size, exc.shortfall_byte_seconds))
            return ("stored", (what.sha256, what.size))
        if kind == "delete":
            try:
                await items.delete_item(
                    pool=pool, storage=storage, pubkey=PUBKEY, sha256=what, now=now, policy=policy
                )
            except NotOwned:
                return ("gone", what)  # a concurrent delete of the same file got there first
            return ("deleted", what)
        async with pool.acquire() as conn, conn.transaction():
            await accounts.ensure(conn, PUBKEY, now)
            await accounts.add_credit(conn, PUBKEY, now, what, free_bytes=policy.free_bytes)
        return ("credited", what)

    for step in history:
        for op in step:
            if op[0] == "wait":
                now += timedelta(seconds=op[1])
        model.at(now)
        actions = resolve(step)
        predicted = [model.shortfall(a[1].sha256, a[1].size) for a in actions if a[0] == "upload"]
        alone = len(actions) == 1
        if alone:
            outcomes = [await run(actions[0])]
        else:
            # Hold the account row until every operation of the step waits on a lock: then they all
            # run against the same state, in whatever order the locks are granted.
            tasks: list[asyncio.Task] = []
            try:
                async with db.transaction():
                    await db.execute("SELECT 1 FROM accounts WHERE pubkey = $1 FOR UPDATE", PUBKEY)
                    tasks = [asyncio.create_task(run(a)) for a in actions]
                    await each_waiting_or_done(db, tasks)
            finally:
                outcomes = list(await asyncio.gather(*tasks))
        added = False
        for what, detail in outcomes:
            if what == "stored":
                sha, size = detail
                if sha not in model.files:
                    added = True
                    model.files[sha] = size
                    model.stored += size
            elif what == "deleted":
                model.stored -= model.files.pop(detail)
            elif what == "credited":
                model.credit += detail
            elif what == "refused" and alone:
                # Run alone, the SQL's refusal and its shortfall are exactly the model's.
                assert [detail[2]] == predicted
        if alone and actions[0][0] == "upload":
            assert (outcomes[0][0] == "stored") == (predicted == [0])
        row = await accounts.advance(db, PUBKEY, now, free_bytes=policy.free_bytes)
        assert row is not None
        # The database holds exactly what the model holds: totals, credit and the metered usage.
        assert row.storage_bytes == model.stored == sum(model.files.values())
        assert row.credit_byte_seconds == model.credit
        assert row.usage_byte_seconds == model.usage
        assert row.usage_byte_seconds >= seen_usage
        seen_usage = row.usage_byte_seconds
        owned = {
            r["sha256"]: r["size"]
            for r in await db.fetch(
                "SELECT f.sha256, b.size FROM files f JOIN blobs b USING (sha256) WHERE f.pubkey = $1", PUBKEY
            )
        }
        assert owned == model.files
        if added:  # new bytes were accepted: whatever order the commits ran in, the rule holds
            assert model.within_the_rule()
