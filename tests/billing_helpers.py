"""The purchase flow as a Nostr web client runs it: request an offer, sign the 9734, get the invoice."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import urlsplit

from nostr_helpers import auth_params

from satellite.nostr.keys import SecretKey


async def request_offer(client, key: SecretKey, gb_months: int | str, **kw) -> dict:
    resp = await client.get(
        "/account/credit", params=auth_params(key, "Request Storage", [["gb_months", str(gb_months)]], **kw)
    )
    assert resp.status == 200, await resp.text()
    return await resp.json()


def sign_payment(key: SecretKey, template: dict) -> str:
    """Sign the server's unsigned 9734 exactly as NIP-07 `signEvent` would; return its JSON text."""
    event = key.sign_event(
        kind=template["kind"],
        content=template["content"],
        tags=template["tags"],
        created_at=template["created_at"],
    )
    return json.dumps(event.to_dict())


async def callback(client, offer: dict, payment_json: str, amount: int | str | None = None):
    path = urlsplit(offer["callback"]).path
    params = {"nostr": payment_json, "amount": str(offer["amount"] if amount is None else amount)}
    return await client.get(path, params=params)


async def invoice_for(client, key: SecretKey, gb_months: int, **kw) -> tuple[dict, str, str]:
    """(offer response, signed 9734 JSON, BOLT11 invoice)."""
    offer = await request_offer(client, key, gb_months, **kw)
    payment = sign_payment(key, offer["payment"])
    resp = await callback(client, offer, payment)
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["routes"] == []
    return offer, payment, body["pr"]


async def dev_pay(client, pr: str, amount_msat: int | None = None):
    payload: dict = {"bolt11": pr}
    if amount_msat is not None:
        payload["amount_msat"] = amount_msat
    return await client.post("/dev/pay", json=payload)


async def account(client, key: SecretKey, **kw) -> dict:
    resp = await client.get("/account", params=auth_params(key, "Authenticate User", **kw))
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def wait_for(predicate, within: float = 10.0):
    """Poll an async predicate until it returns a truthy value."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        value = await predicate()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.1)
