"""`satellite reconcile` against each Lightning backend, faked at its HTTP boundary: payments the
watcher missed are settled, and what cannot be put right makes it exit 1."""

from __future__ import annotations

import bolt11
import pytest
from billing_helpers import account, invoice_for
from fake_nodes import STATEFUL_NODES, backend_settings
from operator_helpers import ok, run

from satellite.config import Settings
from satellite.nostr.keys import SecretKey

KINDS = sorted(STATEFUL_NODES)
# The main case runs against every backend; the others against LND alone (what they check is ours, not
# the backend's: each backend's answers for unknown and unpaid invoices are tested with the others).
EVERY_BACKEND = pytest.mark.parametrize("node", KINDS, indirect=True)


@pytest.fixture(params=["lnd"])
async def node(request):
    fake = STATEFUL_NODES[request.param]()
    await fake.start()
    yield request.param, fake
    await fake.close()


@pytest.fixture
def node_settings(node, settings, tmp_path):
    kind, fake = node
    env = backend_settings(kind, fake.url, tmp_path)
    values = {**settings.model_dump(), **{k.lower(): v for k, v in env.items()}}
    return Settings(_env_file=None, **{**values, "free_storage_bytes": 0})


def hash_of(pr: str) -> str:
    return bolt11.decode(pr).payment_hash


@EVERY_BACKEND
async def test_missed_payments_are_settled_once_and_a_short_payment_is_reported(
    node, node_settings, make_client, db
):
    kind, fake = node
    client = await make_client(node_settings)
    missed, short, unpaid = SecretKey.generate(), SecretKey.generate(), SecretKey.generate()
    invoices = {}
    for key in (missed, short, unpaid):
        offer, _payment, pr = await invoice_for(client, key, 2)
        invoices[key.pubkey] = (offer, pr)
    await client.close()  # the server is down: its watcher sees nothing of what follows
    fake.pay(invoices[missed.pubkey][1])
    fake.pay(invoices[short.pubkey][1], amount_msat=invoices[short.pubkey][0]["amount"] - 1000)

    dry = await run(node_settings, "reconcile", "--dry-run", "--json")
    assert dry.code == 1, dry.err  # the short payment cannot be put right
    assert {i["pubkey"]: i["verdict"] for i in dry.json["invoices"]} == {
        missed.pubkey: "settled",
        short.pubkey: "settled_underpaid",
    }
    assert await db.fetchval("SELECT count(*) FROM offers WHERE status = 'invoiced'") == 3

    first = await run(node_settings, "reconcile", "--json")
    assert first.code == 1, first.err
    report = first.json
    assert report["backend"] == kind and report["checked"] == 3
    assert report["fixed"] == 1 and report["problems"] == 1
    found = {i["pubkey"]: i for i in report["invoices"]}
    assert set(found) == {missed.pubkey, short.pubkey}
    assert found[missed.pubkey]["verdict"] == "settled" and found[missed.pubkey]["problem"] is False
    assert found[short.pubkey]["verdict"] == "settled_underpaid" and found[short.pubkey]["problem"] is True
    assert found[short.pubkey]["node_received_msat"] == invoices[short.pubkey][0]["amount"] - 1000
    assert report["verdicts"]["agrees"] == 1

    client = await make_client(node_settings)
    paid = await account(client, missed)
    assert paid["creditTotal"] == 2
    receipt = paid["transactions"][0]["receipt"]
    assert receipt["kind"] == 9735 and ["P", missed.pubkey] in receipt["tags"]
    assert (await account(client, short))["creditTotal"] == 0
    assert (await account(client, unpaid))["creditTotal"] == 0

    second = await run(node_settings, "reconcile", "--json")
    assert second.code == 0, second.err
    assert second.json["fixed"] == 0 and second.json["problems"] == 0 and second.json["invoices"] == []
    assert second.json["verdicts"]["agrees"] == 3
    assert (await account(client, missed))["creditTotal"] == 2  # credited once


@EVERY_BACKEND
async def test_invoices_the_node_does_not_know_or_cannot_tell_are_reported(
    node, node_settings, make_client, db
):
    _kind, fake = node
    client = await make_client(node_settings)
    lost, paid = SecretKey.generate(), SecretKey.generate()
    _o, _p, lost_pr = await invoice_for(client, lost, 1)
    _o, _p, paid_pr = await invoice_for(client, paid, 1)
    await client.close()
    fake.forget(hash_of(lost_pr))
    fake.pay(paid_pr)

    ran = await run(node_settings, "reconcile", "--json")
    assert ran.code == 1
    verdicts = {i["pubkey"]: i["verdict"] for i in ran.json["invoices"]}
    assert verdicts == {lost.pubkey: "not_on_node", paid.pubkey: "settled"}
    assert "not_on_node" in ran.err  # logged as a warning too

    # A paid invoice whose payment the node no longer shows: credit was given for nothing it knows of.
    fake.forget(hash_of(paid_pr))
    again = await run(node_settings, "reconcile", "--json")
    assert again.code == 1 and {i["verdict"] for i in again.json["invoices"]} == {"not_on_node"}

    fake.go_down()
    down = await run(node_settings, "reconcile")
    assert down.code == 1 and "node_unavailable" in down.out
    assert await db.fetchval("SELECT count(*) FROM offers WHERE status = 'paid'") == 1


async def test_a_late_payment_of_an_invoice_marked_expired_is_credited(node, node_settings, make_client, db):
    """The node may take a payment after we gave the invoice up (clocks differ, a payment in flight):
    the sats arrived, so the credit is given, by reconcile and by the watcher alike."""
    _kind, fake = node
    client = await make_client(node_settings)
    key = SecretKey.generate()
    _o, _p, pr = await invoice_for(client, key, 1)
    await client.close()
    await db.execute("UPDATE offers SET status = 'expired'")
    fake.pay(pr)
    settled = await ok(node_settings, "reconcile", "--since", "1d")
    assert [i["verdict"] for i in settled["invoices"]] == ["settled"]
    assert await db.fetchval("SELECT status FROM offers") == "paid"
    assert (await ok(node_settings, "reconcile"))["fixed"] == 0


async def test_a_recorded_amount_the_node_does_not_confirm_is_a_mismatch(
    node, node_settings, make_client, db
):
    """What the node says it received is compared with what was recorded when the payment settled:
    a difference (a node restored from a backup, a database edited by hand) is reported, not fixed."""
    _kind, fake = node
    client = await make_client(node_settings)
    key = SecretKey.generate()
    _o, _p, pr = await invoice_for(client, key, 1)
    await client.close()
    fake.pay(pr)
    assert (await ok(node_settings, "reconcile"))["fixed"] == 1
    await db.execute("UPDATE offers SET amount_received_msat = amount_received_msat + 1000")
    ran = await run(node_settings, "reconcile", "--json")
    assert ran.code == 1
    [finding] = ran.json["invoices"]
    assert finding["verdict"] == "amount_mismatch" and finding["node_received_msat"] == finding["amount_msat"]
    assert finding["received_msat"] == finding["amount_msat"] + 1000
