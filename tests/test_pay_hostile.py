"""BUD-07 payments under attack: limits, odd proofs, lying and slow nodes, prices. Real HTTP, real
PostgreSQL; every test is bounded and waits on events, never on sleeps."""

from __future__ import annotations

import asyncio
import hashlib

import bolt11
import pytest
from billing_helpers import callback, request_offer, sign_payment
from fake_nodes import StatefulLnd
from nostr_helpers import blossom_header
from test_pay_any_client import BODY, account, pay, upload_headers

from satellite.config import LightningBackendName
from satellite.nostr.keys import SecretKey


@pytest.fixture
async def paying(make_client, settings):
    return await make_client(settings.model_copy(update={"free_storage_bytes": 0}))


@pytest.fixture
async def lnd():
    node = StatefulLnd()
    node.url = await node.start()
    yield node
    await node.close()


@pytest.fixture
async def on_lnd(make_client, settings, lnd):
    return await make_client(
        settings.model_copy(
            update={
                "free_storage_bytes": 0,
                "lightning_backend": LightningBackendName.LND,
                "lnd_rest_url": lnd.url,
                "lnd_macaroon": "0201abcd",
                "lightning_timeout_seconds": 2,
                "settlement_poll_seconds": 3600,  # the proof, not the poller, must find the payment
            }
        )
    )


def check_headers(key: SecretKey) -> dict[str, str]:
    return {**upload_headers(key), "X-Content-Length": str(len(BODY))}


async def test_the_same_402_asked_again_keeps_its_invoice_past_the_credit_request_limit(paying, user, db):
    """FAILS: a client that checks (HEAD) a few times and then PUTs, for one blob, is handed the same
    open invoice each time, so no new invoice is made; yet each 402 takes a credit-request token first
    (5/minute per pubkey), and the sixth 402 comes without X-Lightning although its invoice is open."""
    invoices = []
    for _ in range(7):
        resp = await paying.head("/upload", headers=check_headers(user))
        assert resp.status == 402
        invoices.append(resp.headers.get("X-Lightning"))
    assert await db.fetchval("SELECT count(*) FROM offers") == 1
    assert None not in invoices and len(set(invoices)) == 1, invoices


async def test_holds_the_402_invoice_costs_what_account_credit_asks_for_the_same_gb_months(
    make_client, settings, user
):
    client = await make_client(
        settings.model_copy(update={"free_storage_bytes": 0, "payment_min_gb_months": 3})
    )
    refused = await client.head("/upload", headers=check_headers(user))
    assert refused.status == 402 and "(3 GB-months)" in refused.headers["X-Reason"]
    offer = await request_offer(client, user, 3)
    assert bolt11.decode(refused.headers["X-Lightning"]).amount_msat == offer["amount"] == 3 * 50_000


@pytest.mark.parametrize(
    "value",
    [
        "é" * 64,
        "０" * 64,  # fullwidth digits: isdigit, not hex
        "a" * 8000,
        "0x" + "a" * 62,
        "a" * 63 + "\u00a0",
        "a" * 32 + " " + "a" * 31,
    ],
)
async def test_holds_an_odd_x_lightning_is_a_400_never_a_500(paying, user, db, value):
    raw = {**upload_headers(user), "X-Lightning": value.encode("utf-8").decode("latin-1")}
    resp = await paying.put("/upload", data=BODY, headers=raw)
    assert resp.status in (400, 431), (resp.status, await resp.text())
    assert await db.fetchval("SELECT count(*) FROM blobs") == 0


async def test_holds_an_uppercase_proof_works_and_its_receipt_keeps_the_preimage(paying, user, db):
    refused = await paying.put("/upload", data=BODY, headers=upload_headers(user))
    preimage = await pay(paying, refused.headers["X-Lightning"])
    stored = await paying.put("/upload", data=BODY, headers=upload_headers(user, preimage.upper()))
    assert stored.status == 201, await stored.text()
    [purchase] = [t for t in (await account(paying, user))["transactions"] if t["type"] == "purchase"]
    assert ["preimage", preimage] in purchase["receipt"]["tags"]


async def test_holds_an_underpaid_402_invoice_proves_nothing(on_lnd, lnd, user):
    refused = await on_lnd.put("/upload", data=BODY, headers=upload_headers(user))
    pr = refused.headers["X-Lightning"]
    lnd.pay(pr, amount_msat=bolt11.decode(pr).amount_msat - 1000)
    preimage = lnd.preimages[bolt11.decode(pr).payment_hash].hex()
    resp = await on_lnd.put("/upload", data=BODY, headers=upload_headers(user, preimage))
    assert resp.status == 400 and "less" in resp.headers["X-Reason"], resp.headers.get("X-Reason")
    assert (await account(on_lnd, user))["creditTotal"] == 0


async def test_holds_an_invoice_expired_then_paid_is_credited_once_by_its_proof(on_lnd, lnd, user, db):
    refused = await on_lnd.put("/upload", data=BODY, headers=upload_headers(user))
    pr = refused.headers["X-Lightning"]
    await db.execute("UPDATE offers SET status = 'expired'")  # the watcher gave up on it
    lnd.pay(pr)
    preimage = lnd.preimages[bolt11.decode(pr).payment_hash].hex()
    answers = await asyncio.gather(
        *(on_lnd.put("/upload", data=BODY, headers=upload_headers(user, preimage)) for _ in range(8))
    )
    assert sorted(a.status for a in answers) == [201] + [400] * 7
    assert (await account(on_lnd, user))["creditTotal"] == 1


async def test_holds_a_node_that_says_settled_for_a_hash_we_never_issued_credits_nothing(on_lnd, lnd, user):
    """A lying node: whatever it says of a payment hash, the server issued no invoice with it."""
    other = SecretKey.generate()
    refused = await on_lnd.put("/upload", data=BODY, headers=upload_headers(other))
    pr = refused.headers["X-Lightning"]
    lnd.pay(pr)  # settled, but for another pubkey's invoice
    preimage = lnd.preimages[bolt11.decode(pr).payment_hash].hex()
    resp = await on_lnd.put("/upload", data=BODY, headers=upload_headers(user, preimage))
    assert resp.status == 400
    assert (await account(on_lnd, user))["creditTotal"] == 0


async def test_holds_a_v1_purchase_preimage_as_a_proof_credits_it_once(paying, user):
    offer = await request_offer(paying, user, 1)
    resp = await callback(paying, offer, sign_payment(user, offer["payment"]))
    preimage = await pay(paying, (await resp.json())["pr"])
    answers = await asyncio.gather(
        *(paying.put("/upload", data=BODY, headers=upload_headers(user, preimage)) for _ in range(5))
    )
    assert sorted(a.status for a in answers) == [201] + [400] * 4
    assert (await account(paying, user))["creditTotal"] == 1


async def test_holds_many_blobs_make_no_more_invoices_than_the_credit_limit(paying, user, db):
    made = 0
    for i in range(12):
        sha = hashlib.sha256(b"%d" % i).hexdigest()
        headers = {**blossom_header(user, "upload", x=[sha]), "X-SHA-256": sha, "X-Content-Length": "10"}
        resp = await paying.head("/upload", headers=headers)
        assert resp.status == 402
        made += "X-Lightning" in resp.headers
    assert made == 5 and await db.fetchval("SELECT count(*) FROM offers") == 5


async def test_concurrent_402s_for_one_blob_make_one_invoice(paying, user, db):
    """FAILS: a client that sends its HEAD and PUT (or a few retries) at once is handed several invoices
    for the same blob: `invoice_for_upload` looks for an open one, then makes one, with nothing between
    (no lock, no unique key), so each concurrent 402 makes its own offer and node invoice. A client that
    pays each invoice it is shown pays several times for one blob."""
    answers = await asyncio.gather(
        *(paying.head("/upload", headers=check_headers(user)) for _ in range(4)),
        paying.put("/upload", data=BODY, headers=upload_headers(user)),
    )
    assert all(a.status == 402 for a in answers)
    assert len({a.headers["X-Lightning"] for a in answers}) == 1
    assert await db.fetchval("SELECT count(*) FROM offers") == 1
