"""A nutshell wallet (the `cashu` package), run by the mint's own virtualenv for the tests.

    python wallet.py tokens <mint url> <wallet dir> <amount>...   -> JSON list of cashuB tokens
    python wallet.py states <mint url> <wallet dir> <token>...    -> JSON list: each token's proof states
    python wallet.py receive <mint url> <wallet dir> <token>      -> JSON: the wallet's balance after
    python wallet.py request <creqA…>                             -> JSON: the payment request's fields

Tokens are minted against the mint's fake Lightning backend, then swapped to exactly each amount.
"""

from __future__ import annotations

import asyncio
import json
import sys

from cashu.core.nuts import nut18
from cashu.wallet.helpers import deserialize_token_from_string, receive
from cashu.wallet.wallet import Wallet


async def _wallet(url: str, directory: str) -> Wallet:
    wallet = await Wallet.with_db(url, db=directory, name="wallet")
    await wallet.load_mint()
    await wallet.load_proofs()
    return wallet


async def tokens(url: str, directory: str, amounts: list[int]) -> list[str]:
    wallet = await _wallet(url, directory)
    total = sum(amounts) + 8 * len(amounts) + 8  # room for the swaps' input fees
    quote = await wallet.request_mint(total)
    await wallet.mint(total, quote_id=quote.quote)
    made = []
    for amount in amounts:
        _, send = await wallet.swap_to_send(wallet.proofs, amount, set_reserved=True)
        made.append(await wallet.serialize_proofs(send))
    return made


async def states(url: str, directory: str, serialized: list[str]) -> list[list[str]]:
    wallet = await _wallet(url, directory)
    found = []
    for text in serialized:
        token = deserialize_token_from_string(text)
        answer = await wallet.check_proof_state(token.proofs)
        found.append([str(s.state.value if hasattr(s.state, "value") else s.state) for s in answer.states])
    return found


async def receive_token(url: str, directory: str, text: str) -> dict[str, int]:
    wallet = await _wallet(url, directory)
    await receive(wallet, deserialize_token_from_string(text))
    return {"balance": int(wallet.available_balance.amount)}


def main() -> None:
    command, *args = sys.argv[1:]
    if command == "tokens":
        result: object = asyncio.run(tokens(args[0], args[1], [int(a) for a in args[2:]]))
    elif command == "states":
        result = asyncio.run(states(args[0], args[1], args[2:]))
    elif command == "receive":
        result = asyncio.run(receive_token(args[0], args[1], args[2]))
    elif command == "request":
        request = nut18.deserialize(args[0])
        result = {"a": request.a, "u": request.u, "m": request.m, "i": request.i, "s": request.s}
    else:
        raise SystemExit(f"unknown command {command}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
