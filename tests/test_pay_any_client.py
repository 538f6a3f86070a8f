"""BUD-07 with Lightning, over real HTTP with the dev node: a 402 carries an invoice in X-Lightning,
the client pays it and sends the same request again with the preimage, and the account is credited
through the same settle path as the v1 flow, once."""

from __future__ import annotations

import asyncio
import hashlib
import secrets

import bolt11
import pytest
from fake_nodes import StatefulLnd
from hypothesis import given
from hypothesis import strategies as st
from nostr_helpers import auth_params, blossom_header

from satellite.billing.metering import BYTES_PER_GB
from satellite.billing.proof import gb_months_for
from satellite.config import LightningBackendName
from satellite.nostr.keys import SecretKey

BODY = b"%PDF-1.4\n" + b"pay me\n" * 300
SHA = hashlib.sha256(BODY).hexdigest()


@pytest.fixture
async def paying(make_client, settings):
    """A server with no free allowance (every byte is paid for), on the dev node, 50 sats a GB-month."""
    return await make_client(settings.model_copy(update={"free_storage_bytes": 0}))


def upload_headers(key: SecretKey, proof: str | None = None) -> dict[str, str]:
    headers = {**blossom_header(key, "upload", x=[SHA]), "X-SHA-256": SHA}
    if proof is not None:
        headers["X-Lightning"] = proof
    return headers


async def pay(client, pr: str) -> str:
    resp = await client.post("/dev/pay", json={"bolt11": pr})
    assert resp.status == 200, await resp.text()
    return (await resp.json())["preimage"]


async def account(client, key: SecretKey) -> dict:
    return await (await client.get("/account", params=auth_params(key, "Authenticate User"))).json()


async def test_402_then_pay_then_the_same_request_with_the_preimage_stores_it(paying, user, db):
    refused = await paying.put("/upload", data=BODY, headers=upload_headers(user))
    assert refused.status == 402
    pr = refused.headers["X-Lightning"]
    assert "X-Lightning" in refused.headers["X-Reason"]
    decoded = bolt11.decode(pr)
    assert decoded.amount_msat == 50_000  # 1 GB-month at 50 sats: the minimum covers this small blob
    assert decoded.description_hash  # commits to the signed offer
    preimage = await pay(paying, pr)
    stored = await paying.put("/upload", data=BODY, headers=upload_headers(user, preimage))
    assert stored.status == 201, await stored.text()
    assert (await stored.json())["sha256"] == SHA
    seen = await account(paying, user)
    assert seen["creditTotal"] == 1
    [purchase] = [t for t in seen["transactions"] if t["type"] == "purchase"]
    assert purchase["receipt"]["kind"] == 9735
    again = await paying.put("/upload", data=BODY, headers=upload_headers(user, preimage))
    assert again.status == 400 and "already used" in again.headers["X-Reason"]
    assert (await account(paying, user))["creditTotal"] == 1  # credited once
    offer = await db.fetchrow("SELECT sha256, status FROM offers")
    assert dict(offer) == {"sha256": SHA, "status": "paid"}  # tied to the blob


async def test_head_and_put_get_the_same_invoice_and_head_never_spends_a_proof(paying, user):
    check = {**upload_headers(user), "X-Content-Length": str(len(BODY))}
    head = await paying.head("/upload", headers=check)
    assert head.status == 402
    put = await paying.put("/upload", data=BODY, headers=upload_headers(user))
    assert put.headers["X-Lightning"] == head.headers["X-Lightning"]
    preimage = await pay(paying, head.headers["X-Lightning"])
    await paying.head("/upload", headers={**check, "X-Lightning": preimage})  # 200 once the watcher credits
    stored = await paying.put("/upload", data=BODY, headers=upload_headers(user, preimage))
    assert stored.status == 201  # the HEAD did not spend it


async def test_forged_malformed_and_unpaid_proofs_are_400_and_credit_nothing(paying, user, db):
    refused = await paying.put("/upload", data=BODY, headers=upload_headers(user))
    pr = refused.headers["X-Lightning"]
    for proof, reason in (
        (secrets.token_hex(32), "issued no invoice"),
        ("nothex", "64 hex"),
        ("", "64 hex"),
    ):
        resp = await paying.put("/upload", data=BODY, headers=upload_headers(user, proof))
        assert resp.status == 400, proof
        assert reason in resp.headers["X-Reason"], resp.headers["X-Reason"]
    # The node's preimage of the invoice, before it is paid: proves no payment.
    unpaid = await db.fetchval(
        "SELECT preimage FROM dev_invoices WHERE payment_hash = $1", bolt11.decode(pr).payment_hash
    )
    resp = await paying.put("/upload", data=BODY, headers=upload_headers(user, unpaid))
    assert resp.status == 400 and "not paid" in resp.headers["X-Reason"]
    assert (await account(paying, user))["creditTotal"] == 0
    assert await db.fetchval("SELECT count(*) FROM blobs") == 0


async def test_a_proof_for_another_pubkeys_invoice_is_refused(paying, user):
    other = SecretKey.generate()
    refused = await paying.put("/upload", data=BODY, headers=upload_headers(other))
    preimage = await pay(paying, refused.headers["X-Lightning"])
    stolen = await paying.put("/upload", data=BODY, headers=upload_headers(user, preimage))
    assert stolen.status == 400 and "to this pubkey" in stolen.headers["X-Reason"]
    assert (await account(paying, user))["creditTotal"] == 0
    assert (await paying.put("/upload", data=BODY, headers=upload_headers(other, preimage))).status == 201


async def test_twenty_concurrent_retries_with_one_proof_credit_once_and_store_once(paying, user, db):
    refused = await paying.put("/upload", data=BODY, headers=upload_headers(user))
    preimage = await pay(paying, refused.headers["X-Lightning"])
    answers = await asyncio.gather(
        *(paying.put("/upload", data=BODY, headers=upload_headers(user, preimage)) for _ in range(20))
    )
    statuses = sorted(a.status for a in answers)
    assert statuses == [201] + [400] * 19, statuses
    assert (await account(paying, user))["creditTotal"] == 1
    assert await db.fetchval("SELECT count(*) FROM offers WHERE proof_spent_at IS NOT NULL") == 1


async def test_the_v1_upload_402_carries_an_invoice_too(paying, user):
    refused = await paying.put("/item", params=auth_params(user, "Authorize Upload"), data=BODY)
    assert refused.status == 402
    preimage = await pay(paying, refused.headers["X-Lightning"])
    stored = await paying.put(
        "/item", params=auth_params(user, "Authorize Upload"), data=BODY, headers={"X-Lightning": preimage}
    )
    assert stored.status == 200, await stored.text()


async def test_a_big_blob_is_invoiced_for_its_size_over_the_minimum_months(make_client, settings, user):
    client = await make_client(
        settings.model_copy(
            update={"free_storage_bytes": 0, "payment_min_months": 3, "max_upload_bytes": 10**10}
        )
    )
    size = 2 * BYTES_PER_GB + 1  # announced, never sent: the 402 comes before the body
    headers = {**upload_headers(user), "X-Content-Length": str(size)}
    head = await client.head("/upload", headers=headers)
    assert head.status == 402
    assert bolt11.decode(head.headers["X-Lightning"]).amount_msat == 7 * 50_000  # ceil(2.000000001 * 3)


@given(
    st.one_of(st.none(), st.integers(0, 10**13)),
    st.integers(0, 500),
    st.integers(1, 24),
    st.integers(1, 50),
    st.integers(50, 200),
)
def test_the_invoice_is_the_least_whole_gb_months_that_covers_every_rule(
    size, shortfall, months, minimum, maximum
):
    got = gb_months_for(size, shortfall, months=months, minimum=minimum, maximum=maximum)
    needed = max(minimum, shortfall, -(-(size or 0) * months // BYTES_PER_GB))
    assert got == min(maximum, needed)
    if got < maximum:
        assert got * BYTES_PER_GB >= (size or 0) * months and got >= shortfall and got >= minimum


@pytest.fixture
async def lnd():
    node = StatefulLnd()
    node.url = await node.start()
    yield node
    await node.close()


async def test_a_proof_the_node_cannot_confirm_is_503_and_works_once_it_can(make_client, settings, lnd, user):
    """Paid while the watcher could not hear of it: the proof asks the node itself; a node that is down
    gives a 503 (nothing spent), and the same proof works once it is back."""
    on_lnd = {
        "free_storage_bytes": 0,
        "lightning_backend": LightningBackendName.LND,
        "lnd_rest_url": lnd.url,
        "lnd_macaroon": "0201abcd",
        "lightning_timeout_seconds": 2,
    }
    client = await make_client(settings.model_copy(update=on_lnd))
    refused = await client.put("/upload", data=BODY, headers=upload_headers(user))
    pr = refused.headers["X-Lightning"]
    lnd.go_down()
    lnd.pay(pr)
    preimage = lnd.preimages[bolt11.decode(pr).payment_hash].hex()
    down = await client.put("/upload", data=BODY, headers=upload_headers(user, preimage))
    assert down.status == 503 and "Retry-After" in down.headers
    lnd.up = True
    stored = await client.put("/upload", data=BODY, headers=upload_headers(user, preimage))
    assert stored.status == 201, await stored.text()
    assert (await account(client, user))["creditTotal"] == 1
