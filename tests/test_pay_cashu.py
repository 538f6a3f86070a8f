"""BUD-07 with Cashu (NUT-24), over real HTTP against a real nutshell mint on loopback: a 402 carries a
NUT-18 payment request in X-Cashu, a nutshell wallet mints a token, the same request comes again with
`X-Cashu: cashuB…`, and the server swaps the token at the mint, credits the account once and keeps
the new proofs for the operator."""

from __future__ import annotations

import asyncio

from aiohttp import ClientSession
from cashu_helpers import (
    BODY,
    PRICE,
    SHA,
    MintProxy,
    account,
    cashu_settings,
    fee_of,
    states,
    tokens,
    upload_headers,
    wallet,
)
from nostr_helpers import auth_params
from operator_helpers import run

from satellite.cashu.token import decode_payment_request, encode_token, parse_token
from satellite.nostr.keys import SecretKey


async def test_402_then_a_token_then_the_same_request_stores_it_and_credits_once(
    paying, mints, user, db, tmp_path, settings
):
    mint = mints[0]
    refused = await paying.put("/upload", data=BODY, headers=upload_headers(user))
    assert refused.status == 402
    assert "X-Lightning" in refused.headers  # both ways to pay
    request = refused.headers["X-Cashu"]
    assert "X-Cashu" in refused.headers["X-Reason"]
    # nutshell's own NUT-18 decoder reads the request
    # The price, plus the input fee the server pays to swap a token of the fewest proofs (51 = 4 proofs).
    asked = PRICE + 1
    seen = await wallet("request", request)
    assert seen == {"a": asked, "u": "sat", "m": [mint.url], "i": seen["i"], "s": True}
    assert decode_payment_request(request)["a"] == asked

    exact, enough = await tokens(mint.url, tmp_path / "w", PRICE, asked)
    # only the price: the mint's input fee would leave less than that; nothing is spent
    short = await paying.put("/upload", data=BODY, headers=upload_headers(user, exact))
    assert short.status == 400
    assert f"at least {PRICE + fee_of(exact)} sat" in short.headers["X-Reason"]
    assert await states(mint.url, tmp_path / "w", exact) == [["UNSPENT"] * len(parse_token(exact).proofs)]

    stored = await paying.put("/upload", data=BODY, headers=upload_headers(user, enough))
    assert stored.status == 201, stored.headers.get("X-Reason")
    assert (await stored.json())["sha256"] == SHA
    assert set(*(await states(mint.url, tmp_path / "w", enough))) == {"SPENT"}  # swapped at the mint
    seen = await account(paying, user)
    assert seen["creditTotal"] == 1
    [purchase] = [t for t in seen["transactions"] if t["type"] == "purchase"]
    receipt_tags = {t[0]: t[1:] for t in purchase["receipt"]["tags"]}
    assert purchase["receipt"]["kind"] == 9735 and receipt_tags["cashu"] == [mint.url]
    assert receipt_tags["amount"] == [str((PRICE + 1 - fee_of(enough)) * 1000)]
    assert purchase["order"]["id"] == seen_request_id(request)

    again = await paying.put("/upload", data=BODY, headers=upload_headers(user, enough))
    assert again.status == 400 and "already been spent" in again.headers["X-Reason"]
    assert (await account(paying, user))["creditTotal"] == 1

    # The operator takes the ecash out; any nutshell wallet can receive it.
    env_settings = cashu_settings(settings, mint.url)
    out = await run(env_settings, "cashu-proofs", "--json", "--mark-exported")
    assert out.code == 0, out.err
    [held] = out.json["mints"]
    assert held["mint"] == mint.url and held["sat"] == PRICE + 1 - fee_of(enough)
    [exported] = held["tokens"]
    received = await wallet("receive", mint.url, str(tmp_path / "operator"), exported)
    assert received == {"balance": held["sat"] - fee_of(exported)}
    assert (await run(env_settings, "cashu-proofs", "--json")).json["mints"] == []  # handed out once


def seen_request_id(request: str) -> str:
    return str(decode_payment_request(request)["i"])


async def test_untrusted_mint_and_forged_tokens_are_400_credit_nothing_and_spend_nothing(
    paying, mints, user, db, tmp_path
):
    trusted, untrusted = mints
    await paying.put("/upload", data=BODY, headers=upload_headers(user))
    [foreign] = await tokens(untrusted.url, tmp_path / "other", PRICE + 5)
    resp = await paying.put("/upload", data=BODY, headers=upload_headers(user, foreign))
    assert resp.status == 400 and "takes no tokens of" in resp.headers["X-Reason"]
    assert set(*(await states(untrusted.url, tmp_path / "other", foreign))) == {"UNSPENT"}

    [real] = await tokens(trusted.url, tmp_path / "w", PRICE + 5)
    parsed = parse_token(real)
    forged_proofs = [
        {"amount": p.amount * 4, "id": p.keyset_id, "secret": p.secret, "C": p.c} for p in parsed.proofs
    ]
    async with ClientSession() as session, session.get(f"{trusted.url}/v1/keysets") as answer:
        keysets = await answer.json()
    full = keysets["keysets"][0]["id"]
    forged = encode_token(trusted.url, "sat", [{**p, "id": full} for p in forged_proofs])
    resp = await paying.put("/upload", data=BODY, headers=upload_headers(user, forged))
    assert resp.status == 400 and "the mint refused the token" in resp.headers["X-Reason"]
    for text, reason in (("cashuBnotcbor", "CBOR"), ("cashuA" + "x" * 10, "JSON"), ("lnbc1", "cashuB")):
        resp = await paying.put("/upload", data=BODY, headers=upload_headers(user, text))
        assert resp.status == 400 and reason in resp.headers["X-Reason"], (text, resp.headers["X-Reason"])
    assert (await account(paying, user))["creditTotal"] == 0
    assert await db.fetchval("SELECT count(*) FROM blobs") == 0
    assert set(*(await states(trusted.url, tmp_path / "w", real))) == {"UNSPENT"}  # the real one is untouched
    # and it still pays
    assert (await paying.put("/upload", data=BODY, headers=upload_headers(user, real))).status == 201


async def test_twenty_concurrent_retries_with_one_token_credit_once_and_store_once(
    paying, mints, user, db, tmp_path
):
    await paying.put("/upload", data=BODY, headers=upload_headers(user))
    [token] = await tokens(mints[0].url, tmp_path / "w", PRICE + 1)
    answers = await asyncio.gather(
        *(paying.put("/upload", data=BODY, headers=upload_headers(user, token)) for _ in range(20))
    )
    statuses = sorted(a.status for a in answers)
    assert statuses == [201] + [400] * 19, [(a.status, a.headers.get("X-Reason")) for a in answers]
    assert (await account(paying, user))["creditTotal"] == 1
    assert await db.fetchval("SELECT count(*) FROM cashu_redemptions WHERE state = 'credited'") == 1
    assert await db.fetchval("SELECT count(*) FROM files") == 1


async def test_two_tokens_for_one_request_at_once_spend_one_and_leave_the_other_unspent(
    paying, mints, user, db, tmp_path
):
    await paying.put("/upload", data=BODY, headers=upload_headers(user))
    first, second = await tokens(mints[0].url, tmp_path / "w", PRICE + 1, PRICE + 1)
    answers = await asyncio.gather(
        paying.put("/upload", data=BODY, headers=upload_headers(user, first)),
        paying.put("/upload", data=BODY, headers=upload_headers(user, second)),
    )
    assert sorted(a.status for a in answers) == [201, 400]
    refused = next(a for a in answers if a.status == 400)
    assert "another token is paying" in refused.headers["X-Reason"]
    spent = await states(mints[0].url, tmp_path / "w", first, second)
    # one spent, one untouched: nothing taken without credit
    assert sorted(",".join(sorted(set(s))) for s in spent) == ["SPENT", "UNSPENT"]
    assert (await account(paying, user))["creditTotal"] == 1


async def test_a_token_sent_by_another_account_is_refused(paying, mints, user, tmp_path):
    other = SecretKey.generate()
    for key in (user, other):
        await paying.put("/upload", data=BODY, headers=upload_headers(key))
    [token] = await tokens(mints[0].url, tmp_path / "w", PRICE + 1)
    assert (await paying.put("/upload", data=BODY, headers=upload_headers(user, token))).status == 201
    stolen = await paying.put("/upload", data=BODY, headers=upload_headers(other, token))
    assert stolen.status == 400 and "another account" in stolen.headers["X-Reason"]
    assert (await account(paying, other))["creditTotal"] == 0


async def test_a_swap_whose_answer_never_comes_is_503_then_recovered_from_the_mint(
    make_client, settings, mints, user, db, tmp_path, proxied
):
    proxy, url = await proxied(MintProxy, mints[0].url)
    client = await make_client(cashu_settings(settings, url, cashu_timeout_seconds=1))
    await client.put("/upload", data=BODY, headers=upload_headers(user))
    [token] = await tokens(url, tmp_path / "w", PRICE + 1)
    proxy.hang_swaps, proxy.swaps_passed = True, 0  # the wallet's own swaps went through it too
    lost = await client.put("/upload", data=BODY, headers=upload_headers(user, token))
    assert lost.status == 503 and lost.headers["Retry-After"]
    assert "not lost" in lost.headers["X-Reason"]
    assert proxy.swaps_passed == 1  # the mint did swap it
    assert set(*(await states(url, tmp_path / "w", token))) == {"SPENT"}
    assert await db.fetchval("SELECT state FROM cashu_redemptions") == "swapping"
    assert (await account(client, user))["creditTotal"] == 0
    proxy.hang_swaps = False
    recovered = await client.put("/upload", data=BODY, headers=upload_headers(user, token))
    assert recovered.status == 201, recovered.headers.get("X-Reason")
    assert proxy.swaps_passed == 1  # recovered by NUT-09 restore, not swapped again
    assert (await account(client, user))["creditTotal"] == 1
    held = await db.fetchval("SELECT proofs FROM cashu_redemptions WHERE state = 'credited'")
    assert held is not None


async def test_head_offers_the_same_cashu_request_as_the_put_and_never_spends(paying, mints, user, tmp_path):
    check = {**upload_headers(user), "X-Content-Length": str(len(BODY))}
    head = await paying.head("/upload", headers=check)
    assert head.status == 402
    put = await paying.put("/upload", data=BODY, headers=upload_headers(user))
    assert seen_request_id(put.headers["X-Cashu"]) == seen_request_id(head.headers["X-Cashu"])
    [token] = await tokens(mints[0].url, tmp_path / "w", PRICE + 1)
    assert (await paying.head("/upload", headers={**check, "X-Cashu": token})).status == 402
    assert set(*(await states(mints[0].url, tmp_path / "w", token))) == {"UNSPENT"}


async def test_without_a_trusted_mint_there_is_no_cashu(make_client, settings, user):
    client = await make_client(settings.model_copy(update={"free_storage_bytes": 0}))
    refused = await client.put("/upload", data=BODY, headers=upload_headers(user))
    assert refused.status == 402 and "X-Cashu" not in refused.headers and "X-Lightning" in refused.headers
    resp = await client.put("/upload", data=BODY, headers=upload_headers(user, "cashuBo2F0"))
    assert resp.status == 400 and "takes no Cashu tokens" in resp.headers["X-Reason"]


async def test_the_v1_upload_402_offers_cashu_too(paying, mints, user, tmp_path):
    refused = await paying.put("/item", params=auth_params(user, "Authorize Upload"), data=BODY)
    assert refused.status == 402 and refused.headers["X-Cashu"].startswith("creqA")
    [token] = await tokens(mints[0].url, tmp_path / "w", PRICE + 1)
    stored = await paying.put(
        "/item", params=auth_params(user, "Authorize Upload"), data=BODY, headers={"X-Cashu": token}
    )
    assert stored.status == 200, stored.headers.get("X-Reason")
