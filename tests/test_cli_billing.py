"""`satellite report`, `expire` and `credit`, run as an operator runs them (a subprocess with the
server's settings), against data a client created through the API at chosen moments."""

from __future__ import annotations

import asyncio
import hashlib
import os
from datetime import UTC, datetime, timedelta

import pytest
import s3_helpers
from operator_helpers import DAY, Seeder, ok, run
from s3_helpers import admin_client, new_bucket
from test_app_s3 import on_s3

from satellite.billing import grants
from satellite.billing.metering import BYTE_SECONDS_PER_GB_MONTH
from satellite.db.pool import create_pool
from satellite.nostr.keys import SecretKey
from satellite.storage.local import LocalStorage

moto_url = s3_helpers.moto_url
aws_sandbox = s3_helpers.aws_sandbox

# 1 GB-month stores SIZE bytes for exactly LASTS_DAYS days.
SIZE = 10_000_000
LASTS_DAYS = BYTE_SECONDS_PER_GB_MONTH // SIZE // DAY  # 3000
SEEDING = timedelta(minutes=1)  # how far times seeded "now" may be from the test's own now


@pytest.fixture
def paid_settings(settings):
    return settings.model_copy(update={"free_storage_bytes": 0, "max_upload_bytes": 16 * 1024 * 1024})


@pytest.fixture
async def shop(make_client, paid_settings):
    return await make_client(paid_settings)


def parse(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


async def seed_lapsing(seeder: Seeder, key: SecretKey, *, runs_out_in_days: float, body: bytes) -> None:
    """1 GB-month bought and SIZE bytes uploaded so long ago that the credit runs out (ran out, when
    negative) that many days from now."""
    seeder.at(LASTS_DAYS - runs_out_in_days)
    await seeder.buy(key, 1)
    await seeder.upload(key, body)
    seeder.now()


def blob(tag: bytes) -> bytes:
    return tag + os.urandom(SIZE - len(tag))


@pytest.fixture
async def population(shop, clock):
    """lapsed: ran out 10 days ago, owns a blob of its own and one shared with `paid`.
    recent: ran out 3 days ago. soon: runs out in 2 days. paid: runs out in 3000 days."""
    seeder = Seeder(shop, clock)
    keys = {name: SecretKey.generate() for name in ("lapsed", "recent", "soon", "paid")}
    own, shared = blob(b"own"), blob(b"shared")
    seeder.at(LASTS_DAYS + 10)
    await seeder.buy(keys["lapsed"], 1)
    await seeder.upload(keys["lapsed"], own[: SIZE // 2])
    await seeder.upload(keys["lapsed"], shared[: SIZE // 2])
    await seed_lapsing(seeder, keys["recent"], runs_out_in_days=-3, body=blob(b"recent"))
    await seed_lapsing(seeder, keys["soon"], runs_out_in_days=2, body=blob(b"soon"))
    seeder.now()
    await seeder.buy(keys["paid"], 1)
    await seeder.upload(keys["paid"], shared[: SIZE // 2])
    return seeder, keys, {"own": own[: SIZE // 2], "shared": shared[: SIZE // 2]}


def by_pubkey(rows):
    return {r["pubkey"]: r for r in rows}


async def test_report_shows_each_account_and_the_totals(population, paid_settings):
    _seeder, keys, _ = population
    started = datetime.now(UTC)
    report = await ok(paid_settings, "report")
    rows = by_pubkey(report["accounts"])
    assert set(rows) == {k.pubkey for k in keys.values()}
    lapsed, soon, paid = rows[keys["lapsed"].pubkey], rows[keys["soon"].pubkey], rows[keys["paid"].pubkey]
    assert lapsed["npub"] == keys["lapsed"].npub and lapsed["files"] == 2
    assert lapsed["storage_bytes"] == SIZE and lapsed["credit_gb_months"] == 1
    assert lapsed["status"] == "lapsed" and lapsed["remaining_gb_months"] < 0
    # Its two halves were uploaded a moment apart: its credit ran out 10 days ago (to the seconds that
    # seeding took).
    assert abs(parse(lapsed["paid_through"]) - (started - timedelta(days=10))) < SEEDING
    assert soon["status"] == "paid"
    assert abs(parse(soon["paid_through"]) - (started + timedelta(days=2))) < SEEDING
    assert 0.99 < soon["usage_gb_months"] < 1 and abs(soon["remaining_gb_months"] - 1 / 1500) < 1e-5
    assert abs(parse(paid["paid_through"]) - (started + timedelta(days=2 * LASTS_DAYS))) < SEEDING
    totals = report["totals"]
    assert totals["accounts"] == 4 and totals["files"] == 5
    assert totals["storage_bytes"] == sum(r["storage_bytes"] for r in rows.values())
    assert totals["credit_gb_months"] == 4

    soon_ones = await ok(paid_settings, "report", "--expiring-within", "5")
    assert [r["pubkey"] for r in soon_ones["accounts"]] == [
        keys[n].pubkey for n in ("lapsed", "recent", "soon")
    ]
    assert soon_ones["expiring_within_days"] == 5
    assert [
        r["pubkey"] for r in (await ok(paid_settings, "report", "--expiring-within", "1"))["accounts"]
    ] == [
        keys["lapsed"].pubkey,
        keys["recent"].pubkey,
    ]


async def test_revenue_by_month_and_day_in_sats_and_in_usd_at_the_rate_of_each_sale(
    population, paid_settings
):
    _seeder, _keys, _ = population
    revenue = await ok(paid_settings, "report", "--revenue", "--by", "month")
    # Four purchases of 1 GB-month at the fixed price: 50 sats each; the price implies 1000 sats/USD.
    assert revenue["totals"] == {
        "sales": 4,
        "msat": 200_000,
        "sats": 200,
        "usd": 0.2,
        "sales_without_rate": 0,
    }
    assert sum(p["sales"] for p in revenue["periods"]) == 4
    this_month = datetime.now(UTC).strftime("%Y-%m")
    assert revenue["periods"][-1] == {
        "period": this_month,
        "sales": 1,
        "msat": 50_000,
        "sats": 50,
        "usd": 0.05,
        "sales_without_rate": 0,
    }
    recent = await ok(paid_settings, "report", "--revenue", "--since", "1d", "--by", "day")
    assert [p["sales"] for p in recent["periods"]] == [1]
    assert recent["periods"][0]["period"] == datetime.now(UTC).date().isoformat()
    older = await ok(paid_settings, "report", "--revenue", "--until", "1d")
    assert older["totals"]["sales"] == 3
    text = await run(paid_settings, "report", "--revenue")
    assert text.code == 0 and "total" in text.out and "0.20" in text.out


@pytest.mark.parametrize("store", ["local", "s3"])
async def test_expire_removes_what_lapsed_past_the_grace_period_and_nothing_else(
    store, make_client, paid_settings, clock, db, request
):
    if store == "s3":
        moto = request.getfixturevalue("moto_url")
        request.getfixturevalue("aws_sandbox")
        bucket = new_bucket(moto)
        paid_settings = on_s3(paid_settings, bucket, moto, s3_prefix="b/")

        def stored(sha: str) -> bool:
            listing = admin_client(moto).list_objects_v2(Bucket=bucket, Prefix=f"b/{sha}")
            return bool(listing.get("Contents"))
    else:
        local = LocalStorage(paid_settings.blob_dir, paid_settings.staging_dir)

        def stored(sha: str) -> bool:
            return local.path_for(sha).is_file()

    shop = await make_client(paid_settings)
    seeder = Seeder(shop, clock)
    lapsed, recent, paid = SecretKey.generate(), SecretKey.generate(), SecretKey.generate()
    own, shared = blob(b"own")[: SIZE // 2], blob(b"shared")[: SIZE // 2]
    own_sha, shared_sha = hashlib.sha256(own).hexdigest(), hashlib.sha256(shared).hexdigest()
    seeder.at(LASTS_DAYS + 10)
    await seeder.buy(lapsed, 1)
    await seeder.upload(lapsed, own)
    await seeder.upload(lapsed, shared)
    recent_body = blob(b"recent")
    await seed_lapsing(seeder, recent, runs_out_in_days=-3, body=recent_body)
    await seeder.buy(paid, 1)
    await seeder.upload(paid, shared)
    usage_before = (await seeder.account(lapsed))["usageTotal"]

    dry = await ok(paid_settings, "expire", "--dry-run")
    assert dry["dry_run"] is True and dry["grace_days"] == 7
    assert [a["pubkey"] for a in dry["accounts"]] == [lapsed.pubkey]
    assert sorted(dry["accounts"][0]["removed"]) == sorted([own_sha, shared_sha])
    assert dry["accounts"][0] | {"ran_out_at": None, "removed": None} == {
        "pubkey": lapsed.pubkey,
        "npub": lapsed.npub,
        "ran_out_at": None,
        "removed": None,
        "files": 2,
        "bytes": SIZE,
        "bytes_freed": SIZE // 2,  # the shared blob stays: `paid` owns it too
    }
    assert dry["totals"] == {"accounts": 1, "files": 2, "bytes": SIZE, "bytes_freed": SIZE // 2}
    assert len((await seeder.account(lapsed))["files"]) == 2 and stored(own_sha)

    done = await run(paid_settings, "expire", "--json")
    assert done.code == 0, done.err
    result = done.json
    assert [a["pubkey"] for a in result["accounts"]] == [lapsed.pubkey]
    assert sorted(result["accounts"][0]["removed"]) == sorted([own_sha, shared_sha])
    assert result["totals"] == {"accounts": 1, "files": 2, "bytes": SIZE, "bytes_freed": SIZE // 2}
    assert done.err.count("file removed") == 2 and "credit ran out" in done.err  # every removal logged

    after = await seeder.account(lapsed)
    assert after["files"] == [] and after["storageTotal"] == 0
    assert after["usageTotal"] >= usage_before  # accrued usage is never erased
    assert not stored(own_sha) and stored(shared_sha)
    assert (await shop.get(f"/{own_sha}")).status == 404
    got = await shop.get(f"/{shared_sha}")
    assert got.status == 200 and await got.read() == shared
    assert len((await seeder.account(recent))["files"]) == 1

    again = await ok(paid_settings, "expire")
    assert again["accounts"] == [] and again["totals"]["files"] == 0

    shorter = await ok(paid_settings, "expire", "--grace-days", "2")
    assert [a["pubkey"] for a in shorter["accounts"]] == [recent.pubkey]
    assert not stored(hashlib.sha256(recent_body).hexdigest())
    assert len((await seeder.account(paid))["files"]) == 1


async def test_the_grace_period_is_a_setting(population, paid_settings):
    _seeder, keys, _ = population
    longer = paid_settings.model_copy(update={"expire_grace_days": 30})
    assert (await ok(longer, "expire", "--dry-run"))["accounts"] == []
    shorter = paid_settings.model_copy(update={"expire_grace_days": 1})
    listed = [a["pubkey"] for a in (await ok(shorter, "expire", "--dry-run"))["accounts"]]
    assert listed == [keys["lapsed"].pubkey, keys["recent"].pubkey]


async def test_credit_that_lands_while_expiry_runs_keeps_the_files_not_yet_removed(
    population, paid_settings, database_url
):
    """The lapse is checked again, with the account row locked, before each file: a grant committed
    between two removals stops the rest. Reproduced by granting from inside the first removal."""
    from satellite.billing import expiry

    seeder, keys, _ = population
    lapsed = keys["lapsed"]
    async with await create_pool(database_url, max_size=4) as pool:
        real = LocalStorage(paid_settings.blob_dir, paid_settings.staging_dir)

        class GrantOnFirstDelete:
            def __getattr__(self, name):
                return getattr(real, name)

            granted = False

            async def delete(self, sha256: str) -> None:
                await real.delete(sha256)
                if not self.granted:
                    self.granted = True
                    await grants.grant(
                        pool,
                        pubkey=lapsed.pubkey,
                        byte_seconds=10 * BYTE_SECONDS_PER_GB_MONTH,
                        reason="paid by bank transfer",
                        operator="test",
                        now=datetime.now(UTC),
                        policy=paid_settings.account_policy,
                    )

        done = await expiry.expire(
            pool,
            GrantOnFirstDelete(),  # type: ignore[arg-type]
            now=datetime.now(UTC),
            grace=timedelta(days=7),
            policy=paid_settings.account_policy,
        )
    removed = [r for d in done for r in d.removed if r.pubkey == lapsed.pubkey]
    assert len(removed) == 1
    assert len((await seeder.account(lapsed))["files"]) == 1


async def test_credit_grants_and_refunds_show_in_the_account_and_never_go_below_zero(
    shop, clock, paid_settings, db
):
    seeder = Seeder(shop, clock)
    key = SecretKey.generate()
    await seeder.buy(key, 1)
    granted = await ok(paid_settings, "credit", key.npub, "2.5", "--reason", "outage in November")
    assert granted["pubkey"] == key.pubkey and granted["gb_months"] == 2.5 and granted["grant"] > 0
    assert 3.49 < granted["remaining_gb_months"] <= 3.5
    refunded = await ok(paid_settings, "credit", key.pubkey.upper(), "-1", "--reason", "asked for it back")
    assert 2.49 < refunded["remaining_gb_months"] <= 2.5

    acct = await seeder.account(key)
    assert acct["creditTotal"] == 2.5
    kinds = [t["type"] for t in acct["transactions"]]
    assert kinds == ["purchase", "credit", "refund"]
    assert acct["transactions"][0]["order"]["kind"] == 9733  # purchases keep Satellite's shape
    assert acct["transactions"][1] | {"created_at": 0} == {
        "type": "credit",
        "gbMonths": 2.5,
        "reason": "outage in November",
        "created_at": 0,
    }
    assert acct["transactions"][2]["gbMonths"] == -1

    too_much = await run(paid_settings, "credit", key.npub, "-3", "--reason", "all of it", "--json")
    assert too_much.code == 1 and "below zero" in too_much.err
    assert too_much.json["refused"] and 2.49 < too_much.json["remaining_gb_months"] <= 2.5
    dry = await ok(paid_settings, "credit", key.npub, "-2", "--reason", "check", "--dry-run")
    assert dry["dry_run"] is True and dry["grant"] is None and 0.49 < dry["remaining_gb_months"] <= 0.5
    assert (await seeder.account(key))["creditTotal"] == 2.5
    assert await db.fetchval("SELECT count(*) FROM credit_grants") == 2

    no_reason = await run(paid_settings, "credit", key.npub, "1")
    assert no_reason.code == 2 and "--reason" in no_reason.err
    blank = await run(paid_settings, "credit", key.npub, "1", "--reason", "  ")
    assert blank.code != 0
    bad_key = await run(paid_settings, "credit", "npub1nothing", "1", "--reason", "x")
    assert bad_key.code == 2 and "npub" in bad_key.err
    refused = await run(paid_settings, "credit", key.npub, "1.0000001", "--reason", "x")  # see test_cli_args
    assert refused.code == 1 and "decimals" in refused.err
    assert await db.fetchval("SELECT count(*) FROM credit_grants") == 2


async def test_refunds_at_once_never_take_more_than_is_left(shop, clock, paid_settings, database_url, db):
    """20 refunds of 1 GB-month at once against 5 left: exactly 5 go through."""
    key = SecretKey.generate()
    async with await create_pool(database_url, max_size=8) as pool:
        policy = paid_settings.account_policy
        now = datetime.now(UTC)
        await grants.grant(
            pool,
            pubkey=key.pubkey,
            byte_seconds=5 * BYTE_SECONDS_PER_GB_MONTH,
            reason="start",
            operator="t",
            now=now,
            policy=policy,
        )

        async def refund():
            try:
                await grants.grant(
                    pool,
                    pubkey=key.pubkey,
                    byte_seconds=-BYTE_SECONDS_PER_GB_MONTH,
                    reason="back",
                    operator="t",
                    now=now,
                    policy=policy,
                )
                return True
            except grants.RefundTooLarge:
                return False

        outcomes = await asyncio.gather(*(refund() for _ in range(20)))
    assert outcomes.count(True) == 5
    assert await db.fetchval("SELECT credit_byte_seconds FROM accounts WHERE pubkey = $1", key.pubkey) == 0
    assert await db.fetchval("SELECT count(*) FROM credit_grants WHERE byte_seconds < 0") == 5
