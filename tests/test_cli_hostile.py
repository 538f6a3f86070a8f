"""Hostile cases for the operator commands, each found by attacking them: inputs that must be refused
in one line, dry runs that must say what the real run does, blocks that must hold in every race, and a
reconcile that must stay right against a hung or lying node and a watcher settling at the same time."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit, urlunsplit

import bolt11
import pytest
from billing_helpers import account, callback, dev_pay, invoice_for, request_offer, sign_payment, wait_for
from operator_helpers import DAY, Seeder, ok, run, settings_env

from satellite.billing.metering import BYTE_SECONDS_PER_GB_MONTH
from satellite.nostr.keys import SecretKey

SIZE = 10_000_000
LASTS_DAYS = BYTE_SECONDS_PER_GB_MONTH // SIZE // DAY  # 1 GB-month keeps SIZE billable bytes 3000 days


def blob(tag: bytes, size: int = SIZE) -> bytes:
    return tag + os.urandom(size - len(tag))


@pytest.fixture
def paid_settings(settings):
    return settings.model_copy(update={"free_storage_bytes": 0, "max_upload_bytes": 16 * 1024 * 1024})


# --- 6. CLI: weird inputs give one clean line, never a traceback -------------------------------------

BAD_ARGUMENTS = [
    ("stats", "--top", "-1"),
    ("stats", "--days", "99999999999"),
    ("gc", "--grace-hours", "nan"),
    ("gc", "--grace-hours", "1e300"),
    ("gc", "--grace-hours", "-100"),  # a negative grace: everything would be "old enough"
    ("gc-orphans", "--grace-seconds", "-1"),
    ("report", "--expiring-within", "99999999999"),
    ("expire", "--grace-days", "99999999999"),
]


@pytest.mark.parametrize("argv", BAD_ARGUMENTS, ids=[" ".join(a) for a in BAD_ARGUMENTS])
def test_arguments_out_of_bounds_are_usage_errors(argv, capsys):
    from satellite.cli import parser

    with pytest.raises(SystemExit) as exited:
        parser().parse_args(list(argv))
    assert exited.value.code == 2
    assert "must be from" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ("gc", "--grace-hours", "-100", "--dry-run"),
        ("report", "--revenue", "--since", "9999-12-31T23:59:59-23:59"),
        ("report", "--revenue", "--since", "0001-01-01T00:00+01:00"),
    ],
)
async def test_bad_input_is_refused_in_one_line(settings, db, argv):
    ran = await run(settings, *argv, "--json")
    assert ran.code in (1, 2), f"accepted (exit {ran.code}): {ran.out[:300]}"
    assert "Traceback" not in ran.err, ran.err[-1500:]
    assert ran.out == ""


async def test_a_database_that_does_not_exist_is_one_line(settings, db):
    parts = urlsplit(settings.database_url)
    missing = urlunsplit(parts._replace(path="/no_such_db"))
    ran = await run(settings, "report", "--json", env=settings_env(settings, DATABASE_URL=missing))
    assert ran.code == 1
    assert "Traceback" not in ran.err, ran.err[-1500:]
    assert len(ran.err.strip().splitlines()) == 1, ran.err[-1500:]
    assert 'database "no_such_db" does not exist' in ran.err  # said at once: waiting would not help


# --- 2/3. Expire and the free allowance ---------------------------------------------------------------


async def test_lowering_the_free_allowance_gives_free_accounts_the_whole_grace_period(
    make_client, settings, clock, db
):
    """A free-tier account stored 5 MB 30 days ago within a 10 MB allowance, and has not been looked at
    since. The operator lowers FREE_STORAGE_BYTES to 1 MB: the account runs out from the change on, not
    30 days ago, so `expire` leaves it alone for the grace period. Commands run with the new value
    before the server does are refused: the server still bills with the old one."""
    generous = settings.model_copy(update={"free_storage_bytes": 10_000_000, "max_upload_bytes": 16 << 20})
    client = await make_client(generous)
    seeder = Seeder(client, clock)
    key = SecretKey.generate()
    seeder.at(30)
    await seeder.upload(key, blob(b"free", 5_000_000))
    seeder.now()

    lowered = generous.model_copy(update={"free_storage_bytes": 1_000_000})
    early = await run(lowered, "expire", "--dry-run")
    assert early.code == 1 and "the server bills with 10000000" in early.err
    assert len(early.err.strip().splitlines()) == 1

    await make_client(lowered)  # the server restarts with the new allowance
    assert (await ok(lowered, "expire", "--dry-run"))["accounts"] == []
    assert (await ok(lowered, "expire"))["accounts"] == []
    [row] = (await ok(lowered, "report"))["accounts"]
    assert row["status"] == "lapsed" and row["remaining_gb_months"] == 0
    ran_out = datetime.fromisoformat(row["paid_through"].replace("Z", "+00:00"))
    assert abs(ran_out - datetime.now(UTC)) < timedelta(minutes=1)
    longer_ago = lowered.model_copy(update={"expire_grace_days": 0})
    assert [a["pubkey"] for a in (await ok(longer_ago, "expire", "--dry-run"))["accounts"]] == [key.pubkey]


async def test_the_dry_run_of_expire_keeps_what_the_free_allowance_keeps(make_client, settings, clock, db):
    """Lapsed account with two 10 MB files and a 10 MB free allowance: the real run stops once what is
    left fits the allowance (one file). The dry run must say the same."""
    s = settings.model_copy(update={"free_storage_bytes": SIZE, "max_upload_bytes": 16 << 20})
    client = await make_client(s)
    seeder = Seeder(client, clock)
    key = SecretKey.generate()
    seeder.at(LASTS_DAYS + 10)
    await seeder.buy(key, 1)
    await seeder.upload(key, blob(b"a"))
    await seeder.upload(key, blob(b"b"))
    seeder.now()
    dry = await ok(s, "expire", "--dry-run")
    real = await ok(s, "expire")
    assert real["totals"]["files"] == 1  # the allowance keeps one file
    assert dry["totals"] == real["totals"], (dry["totals"], real["totals"])


async def test_the_dry_run_of_expire_counts_blobs_whose_owners_all_lapsed(
    make_client, paid_settings, clock, db
):
    """Two lapsed accounts share one blob: the real run removes it from storage (its last owner goes),
    the dry run says nothing leaves storage."""
    client = await make_client(paid_settings)
    seeder = Seeder(client, clock)
    shared = blob(b"shared")
    a, b = SecretKey.generate(), SecretKey.generate()
    seeder.at(LASTS_DAYS + 10)
    for key in (a, b):
        await seeder.buy(key, 1)
        await seeder.upload(key, shared)
    seeder.now()
    dry = await ok(paid_settings, "expire", "--dry-run")
    real = await ok(paid_settings, "expire")
    assert real["totals"]["bytes_freed"] == SIZE
    assert dry["totals"]["bytes_freed"] == real["totals"]["bytes_freed"], (dry["totals"], real["totals"])


# --- 4. Block: a blocked pubkey cannot get an invoice for an older offer ------------------------------


async def test_a_blocked_pubkey_gets_no_invoice_by_taking_over_a_stale_claim(make_client, settings, db):
    """An offer left `invoicing` by a callback whose process died (or whose node call hung). After the
    block, the buyer calls the callback again once the claim is stale: the trigger only checks a change
    *to* invoicing from another status, so the re-claim (invoicing -> invoicing) is not refused."""
    client = await make_client(settings)
    key = SecretKey.generate()
    offer = await request_offer(client, key, 1)
    # what a callback killed between its claim and the node's answer leaves behind
    await db.execute(
        "UPDATE offers SET status = 'invoicing', invoicing_at = now() - interval '1 hour' WHERE pubkey = $1",
        key.pubkey,
    )
    await ok(settings, "block", "pubkey", key.pubkey, "--reason", "fraud")
    resp = await callback(client, offer, sign_payment(key, offer["payment"]))
    body = await resp.json()
    assert resp.status == 400 and "blocked" in body.get("reason", ""), body


async def test_a_payment_made_before_the_block_is_credited_after_it(make_client, settings, db):
    """Documents what happens (held, and right: the money was received, so the credit is owed)."""
    client = await make_client(settings)
    key = SecretKey.generate()
    _offer, _payment, pr = await invoice_for(client, key, 1)
    blocked = await ok(settings, "block", "pubkey", key.pubkey, "--reason", "fraud")
    assert blocked["open_invoices"] == [bolt11.decode(pr).payment_hash]  # the operator is told
    assert (await dev_pay(client, pr)).status == 200

    async def credited() -> bool:
        return (await account(client, key))["creditTotal"] > 0

    await wait_for(credited)
    assert await db.fetchval("SELECT status FROM offers WHERE pubkey = $1", key.pubkey) == "paid"


def sha(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


# --- 4. Block: blocked bytes never come back into storage --------------------------------------------


async def test_an_upload_never_puts_back_bytes_a_block_removed(settings, db, database_url):
    """store_upload, after its commit, re-puts the bytes when `blob_created` and they are missing. If the
    operator blocks the content between that commit and that check, the block removes the rows and the
    bytes, and the upload then stores the blocked bytes again (no row: with S3_PUBLIC_URL the bucket
    serves them, at the URL the uploader was just given). Reproduced by blocking from inside the check."""
    from datetime import UTC, datetime

    from satellite import items, moderation
    from satellite.db.pool import create_pool
    from satellite.ingest import Spooled
    from satellite.storage.local import LocalStorage
    from satellite.torrent import piece_length_for

    body = b"illegal content " + os.urandom(1000)
    digest = sha(body)
    real = LocalStorage(settings.blob_dir, settings.staging_dir)
    settings.blob_dir.mkdir(parents=True, exist_ok=True)
    settings.staging_dir.mkdir(parents=True, exist_ok=True)
    policy = settings.account_policy
    async with await create_pool(database_url, max_size=4) as pool:

        class BlockAfterCommit:
            calls = 0

            def __getattr__(self, name):
                return getattr(real, name)

            async def exists(self, sha256: str) -> bool:
                self.calls += 1
                if self.calls == 2:  # the check after the commit: the operator's block lands now
                    await moderation.block(
                        pool,
                        real,
                        kind="sha256",
                        value=sha256,
                        reason="illegal",
                        now=datetime.now(UTC),
                        policy=policy,
                    )
                return await real.exists(sha256)

        spooled = Spooled(
            path=None,
            fd=None,
            data=body,
            size=len(body),
            sha256=digest,
            piece_length=piece_length_for(len(body)),
            pieces=hashlib.sha1(body).digest(),
            head=body[:64],
        )
        storage = BlockAfterCommit()
        key = SecretKey.generate()
        try:
            await items.store_upload(
                pool=pool,
                storage=storage,
                spooled=spooled,
                pubkey=key.pubkey,
                name=None,
                label=None,
                now=datetime.now(UTC),
                policy=policy,
            )
        except Exception as exc:
            print("upload refused:", repr(exc))  # refusing the upload would be fine; storing the bytes is not
        assert storage.calls >= 2
        assert await db.fetchval("SELECT count(*) FROM blocklist WHERE value = $1", digest) == 1
        assert await db.fetchval("SELECT count(*) FROM blobs WHERE sha256 = $1", digest) == 0
        assert not real.path_for(digest).exists(), "blocked bytes are back in storage"


# --- 1. Money: refunds under concurrency never go below zero (expected to hold) ------------------------


async def test_refunds_racing_uploads_never_take_credit_below_zero(
    make_client, paid_settings, clock, db, database_url
):
    import asyncio
    import io
    from datetime import UTC, datetime

    from nostr_helpers import auth_params

    from satellite.billing import grants
    from satellite.db.pool import create_pool

    client = await make_client(paid_settings)
    key = SecretKey.generate()
    policy = paid_settings.account_policy
    month = BYTE_SECONDS_PER_GB_MONTH
    async with await create_pool(database_url, max_size=8) as pool:
        await grants.grant(
            pool,
            pubkey=key.pubkey,
            byte_seconds=10 * month,
            reason="start",
            operator="t",
            now=datetime.now(UTC),
            policy=policy,
        )

        async def refund() -> bool:
            try:
                await grants.grant(
                    pool,
                    pubkey=key.pubkey,
                    byte_seconds=-(6 * month // 10),
                    reason="r",
                    operator="t",
                    now=datetime.now(UTC),
                    policy=policy,
                )
                return True
            except grants.RefundTooLarge:
                return False

        async def upload(i: int) -> int:
            resp = await client.put(
                "/item", params=auth_params(key, "Authorize Upload"), data=io.BytesIO(os.urandom(200_000))
            )
            return resp.status

        results = await asyncio.gather(*(refund() for _ in range(20)), *(upload(i) for i in range(5)))
    refunds = sum(1 for r in results[:20] if r is True)
    assert 1 <= refunds <= 16
    row = await db.fetchrow(
        "SELECT credit_byte_seconds, usage_byte_seconds FROM accounts WHERE pubkey = $1", key.pubkey
    )
    assert row["credit_byte_seconds"] - row["usage_byte_seconds"] >= -(10**12)  # only usage since
    audit = await db.fetch("SELECT byte_seconds FROM credit_grants WHERE pubkey = $1", key.pubkey)
    assert len(audit) == 1 + refunds
    assert sum(r["byte_seconds"] for r in audit) == row["credit_byte_seconds"]


# --- 5. Reconcile: racing the watcher, a hung node, a node answering garbage ---------------------------


class TamperedLnd:
    """A StatefulLnd whose invoice lookups can hang or answer garbage."""

    @staticmethod
    def make():
        import asyncio

        from aiohttp import web
        from fake_nodes import StatefulLnd

        class Lnd(StatefulLnd):
            hang = False
            garbage: str | None = None
            lookups = 0

            async def lookup(self, request):
                self.lookups += 1
                if self.hang:
                    await asyncio.sleep(3600)
                if self.garbage is not None:
                    return web.Response(text=self.garbage, content_type="application/json")
                return await super().lookup(request)

        return Lnd()


@pytest.fixture
async def lnd():
    fake = TamperedLnd.make()
    await fake.start()
    yield fake
    await fake.close()


@pytest.fixture
def lnd_settings(lnd, settings, tmp_path):
    from fake_nodes import backend_settings

    from satellite.config import Settings

    env = backend_settings("lnd", lnd.url, tmp_path)
    values = {**settings.model_dump(), **{k.lower(): v for k, v in env.items()}}
    return Settings(_env_file=None, **{**values, "free_storage_bytes": 0, "lightning_timeout_seconds": 1})


async def test_reconcile_racing_the_watcher_credits_each_payment_once(lnd, lnd_settings, make_client, db):
    import asyncio

    client = await make_client(lnd_settings)  # its watcher follows the node
    keys = [SecretKey.generate() for _ in range(8)]
    prs = [(await invoice_for(client, k, 1))[2] for k in keys]
    await asyncio.sleep(0)  # (no sync needed: the payments below race the watcher on purpose)

    async def pay_all():
        for pr in prs:
            lnd.pay(pr)
            await asyncio.sleep(0)

    runs = await asyncio.gather(pay_all(), *(run(lnd_settings, "reconcile", "--json") for _ in range(4)))

    async def all_paid() -> bool:
        return await db.fetchval("SELECT count(*) FROM offers WHERE status = 'paid'") == len(keys)

    await wait_for(all_paid, within=20)
    for r in runs[1:]:
        assert r.code == 0, r.err[-2000:]
    rows = await db.fetch("SELECT pubkey, credit_byte_seconds FROM accounts")
    assert {r["pubkey"]: r["credit_byte_seconds"] for r in rows} == {
        k.pubkey: BYTE_SECONDS_PER_GB_MONTH for k in keys
    }


async def test_reconcile_against_a_hung_node_stops_asking_and_exits_1(lnd, lnd_settings, make_client, db):
    """Each lookup waits out LIGHTNING_TIMEOUT_SECONDS; after GIVE_UP_AFTER of them in a row the rest
    are not asked, so a hung node costs a bounded time however many invoices there are."""
    from satellite.billing.reconcile import GIVE_UP_AFTER, NOT_ASKED

    client = await make_client(lnd_settings)
    for _ in range(40):
        await invoice_for(client, SecretKey.generate(), 1)
    await client.close()  # its watcher asked the node too: count only what reconcile asks
    lnd.hang, lnd.lookups = True, 0
    ran = await run(lnd_settings, "reconcile", "--json")
    assert ran.code == 1, ran.err[-2000:]
    assert ran.json["verdicts"]["node_unavailable"] == 40
    not_asked = [i for i in ran.json["invoices"] if i["detail"] == NOT_ASKED]
    assert len(not_asked) >= 40 - GIVE_UP_AFTER - 8  # at most the in-flight ones were asked past the limit
    assert lnd.lookups <= GIVE_UP_AFTER + 8


@pytest.mark.parametrize(
    "garbage",
    [
        "not json at all",
        "[1, 2, 3]",
        '{"state": "SETTLED"}',
        '{"state": "SETTLED", "amt_paid_msat": "-5", "settle_date": "1"}',
        '{"state": "SETTLED", "amt_paid_msat": "99999999999999999999999999", "settle_date": "1"}',
        '{"state": "SETTLED", "amt_paid_msat": 1e400, "settle_date": 1}',
    ],
)
async def test_reconcile_against_a_node_answering_garbage_credits_nothing_and_exits_1(
    lnd, lnd_settings, make_client, db, garbage
):
    client = await make_client(lnd_settings)
    await invoice_for(client, SecretKey.generate(), 1)
    await client.close()
    lnd.garbage = garbage
    ran = await run(lnd_settings, "reconcile", "--json")
    assert "Traceback" not in ran.err, ran.err[-2000:]
    assert ran.code == 1, (ran.code, ran.out[-1000:])
    assert await db.fetchval("SELECT count(*) FROM offers WHERE status = 'paid'") == 0
    assert ran.json["problems"] == 1


# --- 2. Expire killed mid-run, then run again (expected to hold) --------------------------------------


async def test_expire_killed_mid_run_then_run_again_leaves_a_consistent_state(
    make_client, paid_settings, clock, db
):
    import asyncio
    import signal
    import sys

    from operator_helpers import settings_env

    from satellite.storage.local import LocalStorage

    client = await make_client(paid_settings)
    seeder = Seeder(client, clock)
    key, other = SecretKey.generate(), SecretKey.generate()
    seeder.at(LASTS_DAYS + 10)
    await seeder.buy(key, 1)
    bodies = [blob(b"f%02d" % i, SIZE // 20) for i in range(20)]
    for body in bodies:
        await seeder.upload(key, body)
    seeder.now()
    await seeder.buy(other, 1)
    await seeder.upload(other, bodies[5])  # shared: must stay in storage

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "satellite",
        "expire",
        "--json",
        env=settings_env(paid_settings),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    removed_lines = 0
    async with asyncio.timeout(60):
        while removed_lines < 3:
            line = await proc.stderr.readline()
            assert line, "expire ended before it could be killed"
            removed_lines += b"file removed" in line
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    again = await ok(paid_settings, "expire")
    assert again["totals"]["files"] >= 1

    local = LocalStorage(paid_settings.blob_dir, paid_settings.staging_dir)
    for row in await db.fetch("SELECT sha256 FROM blobs"):
        assert local.path_for(row["sha256"]).is_file(), "a blob row without bytes"
    assert await db.fetchval("SELECT count(*) FROM files WHERE pubkey = $1", key.pubkey) == 0
    for row in await db.fetch(
        "SELECT a.pubkey, a.storage_bytes, coalesce((SELECT sum(b.size) FROM files f JOIN blobs b USING"
        " (sha256) WHERE f.pubkey = a.pubkey), 0) AS owned FROM accounts a"
    ):
        assert row["storage_bytes"] == row["owned"], dict(row)
    assert local.path_for(sha(bodies[5])).is_file()
    assert (await ok(paid_settings, "expire"))["totals"]["files"] == 0
