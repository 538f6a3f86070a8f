"""Abuse limits as a client meets them: bursts of failed auth, credit requests and uploads, per address
and per pubkey, answered 429 with Retry-After and X-Reason; concurrent uploads per pubkey; and the
limits shared by two servers on one database (as WORKERS processes are)."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from billing_helpers import wait_for
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from nostr_helpers import auth_event, auth_params

from satellite.db import rate_limits
from satellite.limits import Check, LocalBuckets, Rule, parse_rule
from satellite.nostr.keys import SecretKey

PROXY = {"trusted_proxies": "127.0.0.1/32"}  # the test client is the proxy; X-Forwarded-For names the client


def _from(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}


def _forged(key: SecretKey, content: str) -> dict[str, str]:
    event = auth_event(key, content)
    event["sig"] = "00" * 64
    return {"auth": json.dumps(event)}


async def _assert_429(resp, words: str) -> None:
    assert resp.status == 429, await resp.text()
    body = await resp.json()
    assert body["status"] == "error" and words in body["reason"]
    assert resp.headers["X-Reason"] == body["reason"]
    assert int(resp.headers["Retry-After"]) >= 1


async def test_failed_auth_from_one_address_is_cut_off_and_others_are_not(make_client, settings, clock):
    client = await make_client(settings.model_copy(update={**PROXY, "auth_failures_per_ip": "5/minute"}))
    attacker = "203.0.113.7"
    for _ in range(5):
        resp = await client.get(
            "/account", params=_forged(SecretKey.generate(), "Authenticate User"), headers=_from(attacker)
        )
        assert resp.status == 403
    resp = await client.get(
        "/account", params=_forged(SecretKey.generate(), "Authenticate User"), headers=_from(attacker)
    )
    await _assert_429(resp, "failed authentications from this address")
    # Even a valid event is not looked at from that address now, and is not spent.
    user = SecretKey.generate()
    valid = auth_params(user, "Authenticate User")
    resp = await client.get("/account", params=valid, headers=_from(attacker))
    await _assert_429(resp, "failed authentications from this address")
    # Another client, and the same client behind another address, are served.
    assert (await client.get("/account", params=valid, headers=_from("198.51.100.1"))).status == 200
    # Once the bucket refills (one failure per 12 s), the address may try again.
    clock.advance(int(resp.headers["Retry-After"]))
    assert (
        await client.get("/account", params=auth_params(user, "Authenticate User"), headers=_from(attacker))
    ).status == 200


async def test_x_forwarded_for_is_ignored_from_an_untrusted_peer(make_client, settings):
    client = await make_client(settings.model_copy(update={"auth_failures_per_ip": "3/minute"}))
    for n in range(3):  # a new made-up address each time: all counted against the peer
        resp = await client.get(
            "/account",
            params=_forged(SecretKey.generate(), "Authenticate User"),
            headers=_from(f"192.0.2.{n}"),
        )
        assert resp.status == 403
    resp = await client.get(
        "/account", params=_forged(SecretKey.generate(), "Authenticate User"), headers=_from("192.0.2.99")
    )
    await _assert_429(resp, "failed authentications from this address")


async def test_failures_racing_each_other_get_no_more_than_the_budget(make_client, settings):
    """300 bad events at once from one address: exactly the budget of them is answered as a failure,
    the rest 429; and then none is even looked at."""
    client = await make_client(settings.model_copy(update={"auth_failures_per_ip": "5/minute"}))

    async def bad():
        return (
            await client.get("/account", params=_forged(SecretKey.generate(), "Authenticate User"))
        ).status

    first = await asyncio.gather(*(bad() for _ in range(300)))
    assert sorted(first) == [403] * 5 + [429] * 295
    assert set(await asyncio.gather(*(bad() for _ in range(100)))) == {429}


@pytest.mark.parametrize("failures", [0, 2, 4])
async def test_many_valid_requests_at_once_are_not_held_back_by_the_failure_budget(
    make_client, settings, failures
):
    """Even after some failures (an address shared by many clients), valid requests run at once."""
    client = await make_client(settings.model_copy(update={"auth_failures_per_ip": "5/minute"}))
    for _ in range(failures):
        resp = await client.get("/account", params=_forged(SecretKey.generate(), "Authenticate User"))
        assert resp.status == 403

    async def good():
        return (
            await client.get("/account", params=auth_params(SecretKey.generate(), "Authenticate User"))
        ).status

    assert set(await asyncio.gather(*(good() for _ in range(50)))) == {200}


async def test_valid_requests_spend_none_of_the_failure_budget(make_client, settings):
    client = await make_client(settings.model_copy(update={"auth_failures_per_ip": "3/minute"}))
    user = SecretKey.generate()
    for _ in range(10):  # many more valid requests than the failure budget
        assert (await client.get("/account", params=auth_params(user, "Authenticate User"))).status == 200
    for _ in range(3):
        resp = await client.get("/account", params=_forged(SecretKey.generate(), "Authenticate User"))
        assert resp.status == 403
    resp = await client.get("/account", params=auth_params(user, "Authenticate User"))
    await _assert_429(resp, "failed authentications from this address")


async def test_replaying_a_victims_event_spends_the_replayers_budget_only(make_client, settings):
    """An event seen in a URL (a proxy log, a browser history) and replayed from many addresses: each
    replay is a failure of its own address, and the victim's budgets are untouched."""
    client = await make_client(
        settings.model_copy(
            update={**PROXY, "auth_failures_per_ip": "3/minute", "requests_per_pubkey": "5/minute"}
        )
    )
    victim = SecretKey.generate()
    seen = auth_params(victim, "Authenticate User")
    assert (await client.get("/account", params=seen, headers=_from("198.51.100.2"))).status == 200
    for n in range(20):
        resp = await client.get("/account", params=seen, headers=_from(f"198.51.100.{10 + n // 4}"))
        assert resp.status in (403, 429)
    statuses = []
    for n in range(4):  # the victim's own budget for requests (5) is whole: its first one was spent
        fresh = auth_params(victim, "Authenticate User")
        statuses.append((await client.get("/account", params=fresh, headers=_from(f"203.0.113.{n}"))).status)
    assert statuses == [200] * 4


async def test_credit_requests_from_fresh_keys_at_once_make_only_as_many_offers_as_allowed(
    make_client, settings, db
):
    """The finding: a burst of GET /account/credit from fresh keys made an offer row (and a signature)
    for each. 60 at once from one address now make exactly 20."""
    client = await make_client(settings.model_copy(update={"credit_requests_per_ip": "20/minute"}))

    async def ask():
        key = SecretKey.generate()
        params = auth_params(key, "Request Storage", [["gb_months", "1"]])
        return await client.get("/account/credit", params=params)

    responses = await asyncio.gather(*(ask() for _ in range(60)))
    statuses = sorted(r.status for r in responses)
    assert statuses == [200] * 20 + [429] * 40
    await _assert_429(next(r for r in responses if r.status == 429), "credit requests from this address")
    assert await db.fetchval("SELECT count(*) FROM offers") == 20


async def test_credit_requests_of_one_pubkey(make_client, settings, db):
    client = await make_client(
        settings.model_copy(update={**PROXY, "credit_requests_per_pubkey": "4/minute"})
    )
    key = SecretKey.generate()
    statuses = []
    for n in range(6):  # from six addresses: the account's own limit holds
        params = auth_params(key, "Request Storage", [["gb_months", "1"]])
        statuses.append(
            (await client.get("/account/credit", params=params, headers=_from(f"198.51.100.{n}"))).status
        )
    assert statuses == [200] * 4 + [429] * 2
    assert await db.fetchval("SELECT count(*) FROM offers WHERE pubkey = $1", key.pubkey) == 4


async def _upload(client, key: SecretKey, data: bytes, headers=None):
    params = auth_params(key, "Authorize Upload", [["name", "f.bin"]])
    return await client.put("/item", params=params, data=data, headers=headers or {})


async def test_uploads_per_address_and_per_pubkey(make_client, settings, db):
    client = await make_client(
        settings.model_copy(update={**PROXY, "uploads_per_ip": "8/minute", "uploads_per_pubkey": "5/minute"})
    )
    key = SecretKey.generate()
    results = await asyncio.gather(
        *(_upload(client, key, f"file {n}".encode(), _from(f"198.51.100.{n}")) for n in range(20))
    )
    assert sorted(r.status for r in results) == [200] * 5 + [429] * 15
    await _assert_429(next(r for r in results if r.status == 429), "uploads for this pubkey")
    assert await db.fetchval("SELECT count(*) FROM files WHERE pubkey = $1", key.pubkey) == 5
    results = await asyncio.gather(
        *(
            _upload(client, SecretKey.generate(), f"other {n}".encode(), _from("203.0.113.9"))
            for n in range(20)
        )
    )
    assert sorted(r.status for r in results) == [200] * 8 + [429] * 12
    await _assert_429(next(r for r in results if r.status == 429), "uploads from this address")


async def test_concurrent_uploads_of_one_pubkey_are_capped(make_client, settings, db):
    client = await make_client(settings.model_copy(update={"max_concurrent_uploads_per_pubkey": 2}))
    key = SecretKey.generate()
    release = asyncio.Event()

    async def held_body(n: int):
        yield b"x" * 300_000 + bytes([n])
        await release.wait()
        yield b"end"

    held = [asyncio.ensure_future(_upload(client, key, held_body(n))) for n in range(2)]
    await wait_for(lambda: _two(db, key.pubkey))
    resp = await _upload(client, key, b"a third at once")
    await _assert_429(resp, "already has 2 uploads in progress")
    # Another account is not affected.
    assert (await _upload(client, SecretKey.generate(), b"someone else")).status == 200
    release.set()
    assert [r.status for r in await asyncio.gather(*held)] == [200, 200]
    assert await _leases(db, key.pubkey) == 0  # released when they finished
    assert (await _upload(client, key, b"now there is room")).status == 200


async def _two(db, pubkey: str) -> bool:
    return await _leases(db, pubkey) == 2


async def _leases(db, pubkey: str) -> int:
    return await db.fetchval("SELECT count(*) FROM upload_leases WHERE pubkey = $1", pubkey)


async def test_two_servers_on_one_database_share_every_limit(make_client, settings, db):
    """As WORKERS processes do: each server has its own memory, the buckets are in the database."""
    limited = settings.model_copy(update={"credit_requests_per_ip": "10/minute"})
    first, second = await make_client(limited), await make_client(limited)

    async def ask(client):
        params = auth_params(SecretKey.generate(), "Request Storage", [["gb_months", "1"]])
        return (await client.get("/account/credit", params=params)).status

    statuses = await asyncio.gather(*(ask(first if n % 2 else second) for n in range(30)))
    assert sorted(statuses) == [200] * 10 + [429] * 20


async def test_limits_can_be_turned_off(make_client, settings):
    # 40 at once is more than the failure budget that requests reserve while their events are checked.
    off = {
        "credit_requests_per_ip": "off",
        "credit_requests_per_pubkey": "off",
        "auth_failures_per_ip": "off",
    }
    client = await make_client(settings.model_copy(update=off))

    async def ask():
        params = auth_params(SecretKey.generate(), "Request Storage", [["gb_months", "1"]])
        return (await client.get("/account/credit", params=params)).status

    assert set(await asyncio.gather(*(ask() for _ in range(40)))) == {200}


async def test_a_victims_public_notes_cannot_lock_it_out(make_client, settings):
    """Anyone can pick up events a victim signed and published (a note, an old auth event): sent as auth
    they fail, but never against the victim's own budget."""
    client = await make_client(settings.model_copy(update={**PROXY, "requests_per_pubkey": "3/minute"}))
    victim = SecretKey.generate()
    note = json.dumps(auth_event(victim, "gm", kind=1, created_at=int(time.time()) - 30 * 86400))
    stale = json.dumps(auth_event(victim, "Authenticate User", created_at=int(time.time()) - 3600))
    wrong_action = json.dumps(auth_event(victim, "Delete Item"))
    for n, raw in enumerate([note, stale, wrong_action] * 10):
        resp = await client.get("/account", params={"auth": raw}, headers=_from(f"192.0.2.{n}"))
        assert resp.status == 403
    fresh = auth_params(victim, "Authenticate User")
    assert (await client.get("/account", params=fresh, headers=_from("198.51.100.9"))).status == 200


async def test_other_authenticated_requests_are_limited_too(make_client, settings, db):
    client = await make_client(settings.model_copy(update={**PROXY, "requests_per_pubkey": "4/minute"}))
    user = SecretKey.generate()
    statuses = []
    for n in range(6):
        params = auth_params(user, "Authenticate User")
        statuses.append(
            (await client.get("/account", params=params, headers=_from(f"198.51.100.{n}"))).status
        )
    assert statuses == [200] * 4 + [429] * 2
    resp = await client.delete("/item", params=auth_params(user, "Delete Item", [["x", "0" * 64]]))
    await _assert_429(resp, "requests for this pubkey")
    assert await db.fetchval("SELECT count(*) FROM auth_events") == 4  # refused events are not stored


@pytest.mark.parametrize("bad", ["10", "ten/minute", "5/fortnight", "-1/second", "5/minute/2"])
def test_a_rate_that_cannot_be_read_stops_start_up(bad, settings):
    from pydantic import ValidationError

    from satellite.config import Settings

    with pytest.raises(ValidationError, match="uploads_per_ip"):
        Settings(_env_file=None, uploads_per_ip=bad)


@given(st.integers(1, 10**6), st.sampled_from(["second", "minute", "hour", "day"]), st.booleans())
def test_rules_read_back_as_written(count, unit, plural):
    rule = parse_rule(f"{count} / {unit}{'s' if plural else ''}")
    assert rule is not None and rule.burst == count and str(rule) == f"{count}/{unit}"
    assert parse_rule(f"0/{unit}") is None and parse_rule("off") is None


_steps = st.lists(
    st.tuples(
        st.floats(0, 30),
        st.sampled_from([(1.0, 1.0), (0.0, 1.0), (1.0, 0.0), (-1.0, 0.0)]),
    ),
    min_size=1,
    max_size=40,
)


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(burst=st.integers(1, 10), per=st.sampled_from([1.0, 60.0]), steps=_steps)
async def test_the_shared_buckets_and_the_local_ones_agree(db, burst, per, steps, examples_seen):
    """The same requests, timed alike, are allowed or refused alike by the database's buckets and the
    in-memory ones a process keeps, and take the same: so the local filter refuses only what the
    shared one would. Takes, peeks, failures recorded and tokens given back."""
    examples_seen.want = 40
    examples_seen.append(1)
    rule = Rule(burst=burst, per_seconds=per)
    key = f"test:{burst}:{per}:{id(steps)}:{datetime.now(UTC).timestamp()}"
    local = LocalBuckets()
    start = datetime(2030, 1, 1, tzinfo=UTC)
    now = 0.0
    for gap, (cost, need) in steps:
        now += gap
        check = Check(key, rule, "tests", cost, need)
        shared_wait, refused = await rate_limits.take(db, [check], start + timedelta(seconds=now))
        local_wait, local_refused = local.wait([check], now)
        assert (refused is None) == (local_refused is None)
        assert shared_wait == pytest.approx(local_wait, abs=1e-6)
        if refused is None:
            local.take([check], now)


async def test_a_refusal_of_the_shared_buckets_is_learnt_by_the_local_ones(db):
    """Another process spent an address's budget: this one, told once, refuses alike without asking."""
    rule = Rule(burst=3, per_seconds=60.0)
    check = Check(f"test:learn:{datetime.now(UTC).timestamp()}", rule, "tests")
    start = datetime(2030, 1, 1, tzinfo=UTC)
    for _ in range(3):  # spent elsewhere
        assert (await rate_limits.take(db, [check], start))[1] is None
    local = LocalBuckets()
    assert local.wait([check], 5.0) == (0.0, None)  # this process knows nothing yet
    wait, refused = await rate_limits.take(db, [check], start + timedelta(seconds=5))
    assert refused == check
    local.learn(check, wait, 5.0)
    assert local.wait([check], 5.0) == (pytest.approx(wait), check)
    assert local.wait([check], 5.0 + wait)[1] is None  # and allows again when the shared one would
