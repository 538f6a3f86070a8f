"""Buying storage end to end over HTTP on real PostgreSQL, paid through the built-in dev node."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from datetime import UTC, datetime

import bolt11
import pytest
from billing_helpers import account, callback, dev_pay, invoice_for, request_offer, sign_payment, wait_for
from nostr_helpers import auth_params

from satellite.billing.metering import BYTE_SECONDS_PER_GB_MONTH
from satellite.billing.policy import AccountPolicy
from satellite.billing.settle import Outcome, Payment, settle
from satellite.config import Environment
from satellite.db.pool import create_pool
from satellite.nostr.event import event_from_obj, verify
from satellite.nostr.keys import SecretKey, load_or_create_service_key

MONTH = 2_592_000


@pytest.fixture
def paid_settings(settings):
    """No free allowance: every byte needs credit."""
    return settings.model_copy(update={"free_storage_bytes": 0})


@pytest.fixture
async def shop(make_client, paid_settings):
    return await make_client(paid_settings)


async def service_pubkey(client) -> str:
    return (await (await client.get("/")).json())["pubkey"]


async def upload(client, key, body: bytes, **kw):
    return await client.put("/item", params=auth_params(key, "Authorize Upload", **kw), data=body)


async def credited(client, key, **kw):
    async def check():
        acct = await account(client, key, **kw)
        return acct if acct["creditTotal"] > 0 else None

    return await wait_for(check)


async def test_the_whole_purchase_flow(shop, user, clock, db):
    server = await service_pubkey(shop)
    # 1. No credit: uploads are refused with a reason.
    refused = await upload(shop, user, b"x" * 1000)
    assert refused.status == 402
    assert "credit" in (await refused.json())["reason"]

    # 2. The offer: a kind 9733 signed by the server, and the 9734 template to sign.
    offer = await request_offer(shop, user, 2)
    assert offer["amount"] == 2 * 50 * 1000  # 50 sats per GB-month, in msat
    assert offer["rateFiat"] == {"usd": 0.05}
    order = event_from_obj(offer["offer"])
    verify(order)
    assert order.kind == 9733 and order.pubkey == server
    assert order.content == "PURCHASE OF CDN STORAGE (2 GB MONTHS)"
    assert order.first_tag("amount") == str(offer["amount"])
    assert order.first_tag("gb_months") == "2"
    assert order.first_tag("product") == "cdn"
    assert order.first_tag("p") == user.pubkey
    assert int(order.first_tag("expiration")) > clock()
    template = offer["payment"]
    assert template["kind"] == 9734 and template["pubkey"] == user.pubkey
    assert template["content"] == order.content and template["created_at"] == order.created_at
    assert ["p", server] in template["tags"] and ["e", order.id] in template["tags"]
    assert ["amount", str(offer["amount"])] in template["tags"]
    assert any(t[0] == "relays" for t in template["tags"])

    # 3. The callback: a real BOLT11 for exactly the amount, committing to the 9734 as sent.
    payment = sign_payment(user, template)
    resp = await callback(shop, offer, payment)
    assert resp.status == 200
    pr = (await resp.json())["pr"]
    decoded = bolt11.decode(pr)
    assert decoded.amount_msat == offer["amount"]
    assert decoded.description_hash == hashlib.sha256(payment.encode()).hexdigest()

    # 4. Pay through the dev node; the watcher credits the account and signs a receipt.
    paid = await dev_pay(shop, pr)
    assert paid.status == 200
    acct = await credited(shop, user)
    assert acct["creditTotal"] == 2
    [tx] = acct["transactions"]
    assert tx["order"] == offer["offer"]
    assert tx["payment"] == json.loads(payment)
    receipt = event_from_obj(tx["receipt"])
    verify(receipt)
    assert receipt.kind == 9735 and receipt.pubkey == server
    assert receipt.first_tag("p") == server
    assert receipt.first_tag("P") == user.pubkey
    assert receipt.first_tag("e") == order.id
    assert receipt.first_tag("bolt11") == pr
    assert receipt.first_tag("description") == payment
    preimage = receipt.first_tag("preimage")
    assert hashlib.sha256(bytes.fromhex(preimage)).hexdigest() == decoded.payment_hash
    paid_at = await db.fetchval("SELECT paid_at FROM offers WHERE id = $1", order.id)
    assert receipt.created_at == int(paid_at.timestamp())

    # 5. Uploads are allowed now; the credit is spent as time passes.
    body = os.urandom(1_000_000)
    size = len(body)
    assert (await upload(shop, user, body)).status == 200
    acct = await account(shop, user)
    assert acct["storageTotal"] == size
    # 2 GB-months for 1 MB last 2000 months.
    assert acct["timeRemaining"] == pytest.approx(2000 * MONTH, rel=1e-6)
    assert acct["paidThrough"] == pytest.approx(clock() + 2000 * MONTH, abs=5)

    clock.advance(1000 * MONTH)
    now = {"created_at": int(clock())}
    acct = await account(shop, user, **now)
    assert acct["usageTotal"] == pytest.approx(1.0, rel=1e-6)
    assert acct["timeRemaining"] == pytest.approx(1000 * MONTH, rel=1e-6)
    assert (await upload(shop, user, b"more bytes", **now)).status == 200

    # 6. Past the paid-through time: no credit left, 402.
    clock.advance(1001 * MONTH)
    now = {"created_at": int(clock())}
    acct = await account(shop, user, **now)
    assert acct["timeRemaining"] == 0
    assert acct["usageTotal"] > acct["creditTotal"]
    late = await upload(shop, user, b"too late", **now)
    assert late.status == 402


async def test_free_allowance_stores_that_many_bytes_without_credit(make_client, paid_settings, user, db):
    client = await make_client(paid_settings.model_copy(update={"free_storage_bytes": 1000}))
    assert (await upload(client, user, os.urandom(600))).status == 200
    assert (await upload(client, user, os.urandom(400))).status == 200
    over = await upload(client, user, os.urandom(1))
    assert over.status == 402
    acct = await account(client, user)
    assert acct["storageTotal"] == 1000
    assert acct["usageTotal"] == 0  # the allowance is never billed
    assert acct["timeRemaining"] is None
    assert await db.fetchval("SELECT count(*) FROM files") == 2


async def test_chunked_upload_beyond_the_allowance_is_refused_after_reading(
    make_client, paid_settings, user, db
):
    client = await make_client(paid_settings.model_copy(update={"free_storage_bytes": 1000}))

    async def body():
        yield os.urandom(800)
        yield os.urandom(800)

    resp = await client.put("/item", params=auth_params(user, "Authorize Upload"), data=body())
    assert resp.status == 402
    assert await db.fetchval("SELECT count(*) FROM files") == 0
    assert list((paid_settings.blob_dir / "tmp").iterdir()) == []


async def test_usage_is_metered_over_time_and_survives_delete(shop, user, clock):
    _, _, pr = await invoice_for(shop, user, 1)
    await dev_pay(shop, pr)
    await credited(shop, user)
    data = await (await upload(shop, user, os.urandom(5000))).json()
    clock.advance(MONTH)
    now = {"created_at": int(clock())}
    usage = (await account(shop, user, **now))["usageTotal"]
    assert usage == pytest.approx(5000 / 1e9, rel=1e-6)
    resp = await shop.delete(
        "/item", params=auth_params(user, "Delete Item", [["sha256", data["sha256"]]], **now)
    )
    assert resp.status == 200
    clock.advance(MONTH)
    after = await account(shop, user, created_at=int(clock()))
    assert after["usageTotal"] == pytest.approx(usage, rel=1e-6)  # no more accrual, nothing erased
    assert after["storageTotal"] == 0
    assert after["timeRemaining"] is None


async def test_a_second_uploader_pays_from_their_own_upload_time(shop, user, clock):
    other = SecretKey.generate()
    for key in (user, other):
        _, _, pr = await invoice_for(shop, key, 1)
        await dev_pay(shop, pr)
        await credited(shop, key)
    body = os.urandom(10_000)
    assert (await upload(shop, user, body)).status == 200
    clock.advance(MONTH)
    assert (await upload(shop, other, body, created_at=int(clock()))).status == 200
    clock.advance(MONTH)
    now = int(clock())
    first = await account(shop, user, created_at=now)
    second = await account(shop, other, created_at=now)
    assert first["usageTotal"] == pytest.approx(2 * 10_000 / 1e9, rel=1e-6)
    assert second["usageTotal"] == pytest.approx(10_000 / 1e9, rel=1e-6)


# --- what never yields an invoice ------------------------------------------------------------------------


async def invoices_issued(db) -> int:
    return await db.fetchval("SELECT count(*) FROM dev_invoices")


async def assert_refused(resp, words: str):
    assert resp.status == 400, await resp.text()
    body = await resp.json()
    assert body["status"] == "ERROR"
    assert words in body["reason"], body["reason"]
    assert resp.headers["X-Reason"] == body["reason"]


async def test_forged_or_mismatched_payments_get_no_invoice(shop, user, db, clock):
    server = await service_pubkey(shop)
    offer = await request_offer(shop, user, 1)
    template = offer["payment"]

    def variant(**changes) -> str:
        return sign_payment(user, {**template, **changes})

    def tags_without(name: str) -> list:
        return [t for t in template["tags"] if t[0] != name]

    stranger = SecretKey.generate()
    cases = [
        (callback(shop, offer, sign_payment(user, template), amount=offer["amount"] - 1000), "amount"),
        (
            callback(shop, offer, variant(tags=[*tags_without("amount"), ["amount", "1000"]]), amount=1000),
            "amount",
        ),
        # A digit that is not ASCII: "isdigit" yet not a number int() reads.
        (
            callback(shop, offer, variant(tags=[*tags_without("amount"), ["amount", "²"]]), amount="²"),
            "amount",
        ),
        (callback(shop, offer, variant(tags=[*tags_without("p"), ["p", stranger.pubkey]])), "p tag"),
        (callback(shop, offer, variant(tags=[*template["tags"], ["p", stranger.pubkey]])), "p tag"),
        (callback(shop, offer, variant(tags=tags_without("e"))), "e tag"),
        (callback(shop, offer, variant(tags=[*tags_without("e"), ["e", "ab" * 32]])), "unknown offer"),
        (callback(shop, offer, variant(tags=tags_without("relays"))), "relays"),
        (callback(shop, offer, variant(kind=1)), "kind"),
        (
            callback(shop, offer, sign_payment(stranger, {**template, "pubkey": stranger.pubkey})),
            "another pubkey",
        ),
        (
            callback(
                shop, offer, json.dumps({**json.loads(sign_payment(user, template)), "content": "changed"})
            ),
            "id",
        ),
        (
            callback(shop, offer, json.dumps({**json.loads(sign_payment(user, template)), "sig": "00" * 64})),
            "signature",
        ),
        (callback(shop, offer, "not json"), "invalid payment"),
        (callback(shop, offer, ""), "missing"),
    ]
    for request, words in cases:
        await assert_refused(await request, words)
    assert server  # the server key was used to build the expected p tag
    assert await invoices_issued(db) == 0
    # The genuine payment still works afterwards, once.
    genuine = sign_payment(user, template)
    assert (await callback(shop, offer, genuine)).status == 200
    await assert_refused(await callback(shop, offer, genuine), "already been used")
    assert await invoices_issued(db) == 1


async def test_an_expired_offer_gets_no_invoice(shop, user, db, clock, paid_settings):
    offer = await request_offer(shop, user, 1)
    clock.advance(paid_settings.offer_ttl_seconds + 1)
    await assert_refused(await callback(shop, offer, sign_payment(user, offer["payment"])), "expired")
    # Still "expired" once the watcher has marked it so.
    await wait_for(lambda: db.fetchval("SELECT status = 'expired' FROM offers"))
    await assert_refused(await callback(shop, offer, sign_payment(user, offer["payment"])), "expired")
    assert await invoices_issued(db) == 0


async def test_two_alike_requests_in_one_second_get_two_offers(shop, user):
    first, second = await asyncio.gather(request_offer(shop, user, 1), request_offer(shop, user, 1))
    assert first["offer"]["id"] != second["offer"]["id"]


@pytest.mark.parametrize("value", ["0", "-1", "abc", "1.5", "", "121", "007"])
async def test_gb_months_must_be_a_positive_integer_within_the_maximum(shop, user, value):
    resp = await shop.get(
        "/account/credit", params=auth_params(user, "Request Storage", [["gb_months", value]])
    )
    assert resp.status == 400
    assert "gb_months" in (await resp.json())["reason"]


async def test_credit_request_needs_its_own_auth_content(shop, user):
    resp = await shop.get(
        "/account/credit", params=auth_params(user, "Authenticate User", [["gb_months", "1"]])
    )
    assert resp.status == 403


# --- what is paid must be what was offered ----------------------------------------------------------------


async def test_an_underpaid_invoice_never_credits(shop, user, db):
    offer, _, pr = await invoice_for(shop, user, 3)
    assert (await dev_pay(shop, pr, amount_msat=offer["amount"] - 1)).status == 200

    async def settled():
        return await db.fetchval(
            "SELECT status FROM offers WHERE payment_hash IS NOT NULL AND status <> 'invoiced'"
        )

    assert await wait_for(settled) == "underpaid"
    acct = await account(shop, user)
    assert acct["creditTotal"] == 0
    assert acct["transactions"] == []


async def test_the_same_settlement_seen_many_times_credits_once(shop, user, db, paid_settings):
    offer, _, pr = await invoice_for(shop, user, 1)
    payment_hash = bolt11.decode(pr).payment_hash
    # As if the stream, the poller and other processes all reported it at once.
    key = load_or_create_service_key("", paid_settings.data_dir / "service.key")
    async with await create_pool(paid_settings.database_url, max_size=8) as pool:
        outcomes = await asyncio.gather(
            *(
                settle(
                    pool,
                    key,
                    Payment(payment_hash, offer["amount"], 1_700_000_000, None),
                    policy=AccountPolicy(free_bytes=0),
                    now=datetime.now(UTC),
                )
                for _ in range(8)
            )
        )
    assert outcomes.count(Outcome.CREDITED) == 1
    assert outcomes.count(Outcome.ALREADY_DONE) == 7
    acct = await account(shop, user)
    assert acct["creditTotal"] == 1
    assert len(acct["transactions"]) == 1
    credit = await db.fetchval("SELECT credit_byte_seconds FROM accounts WHERE pubkey = $1", user.pubkey)
    assert credit == BYTE_SECONDS_PER_GB_MONTH
    # The dev node's own settlement of the same invoice changes nothing either, once the watcher has
    # seen it (its stream cursor has passed it).
    assert (await dev_pay(shop, pr)).status == 200
    index = await db.fetchval("SELECT settle_index FROM dev_invoices WHERE bolt11 = $1", pr)

    async def seen() -> bool:
        cursor = await db.fetchval("SELECT cursor FROM lightning_cursors WHERE backend = 'dev'")
        return cursor is not None and int(cursor) >= index

    await wait_for(seen)
    assert (await account(shop, user))["creditTotal"] == 1


async def test_dev_pay_refuses_unknown_and_repeated_invoices(shop, user):
    _, _, pr = await invoice_for(shop, user, 1)
    assert (await dev_pay(shop, pr)).status == 200
    again = await dev_pay(shop, pr)
    assert again.status == 400
    assert "already paid" in (await again.json())["reason"]
    bogus = await dev_pay(shop, "lnbc1notaninvoice")
    assert bogus.status == 400


async def test_lnurl_pay_endpoint_advertises_nostr_support(shop):
    server = await service_pubkey(shop)
    resp = await shop.get("/.well-known/lnurlp/storage")
    assert resp.status == 200
    body = await resp.json()
    assert body["tag"] == "payRequest"
    assert body["allowsNostr"] is True
    assert body["nostrPubkey"] == server
    assert body["callback"] == "http://cdn.test/lnurl/callback"
    assert json.loads(body["metadata"])[0][0] == "text/plain"
    assert (await shop.get("/.well-known/lnurlp/someone-else")).status == 404


async def test_the_dev_pay_route_exists_only_with_the_dev_node_in_dev_mode(make_client, paid_settings):
    client = await make_client(
        paid_settings.model_copy(update={"environment": Environment.PRODUCTION, "allow_dev_lightning": True})
    )
    assert (await client.post("/dev/pay", json={"bolt11": "x"})).status in (404, 405)


async def test_production_refuses_the_dev_node_unless_allowed(make_client, paid_settings):
    with pytest.raises(Exception, match="LIGHTNING_BACKEND=dev"):
        await make_client(paid_settings.model_copy(update={"environment": Environment.PRODUCTION}))


async def test_no_known_exchange_rate_means_503_never_a_wrong_price(make_client, paid_settings, user, db):
    dead = "http://127.0.0.1:9"  # the discard port: nothing listens there
    live = paid_settings.model_copy(
        update={
            "price_sats_per_gb_month": 0,
            "exchange_rate_providers": f"coinbase={dead},kraken={dead},bitstamp={dead}",
            "exchange_rate_timeout_seconds": 0.5,
        }
    )
    client = await make_client(live)
    resp = await client.get(
        "/account/credit", params=auth_params(user, "Request Storage", [["gb_months", "1"]])
    )
    assert resp.status == 503
    assert "exchange rate" in (await resp.json())["reason"]
    assert await db.fetchval("SELECT count(*) FROM offers") == 0
    acct = await account(client, user)
    assert acct["exchangeFiat"] == {"usd": None}
