"""A real nutshell mint on loopback (its fake Lightning backend pays every mint quote at once), run from
its own virtualenv (tests/cashu_mint, made by `make test` or here on first use), and a nutshell wallet
against it."""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import math
import os
import secrets
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from aiohttp import ClientSession, web
from nostr_helpers import auth_params, blossom_header
from processes import free_port

from satellite.cashu.token import parse_token
from satellite.nostr.keys import SecretKey

MINT_DIR = Path(__file__).parent / "cashu_mint"
BODY = b"%PDF-1.4\n" + b"pay me in ecash\n" * 300
SHA = hashlib.sha256(BODY).hexdigest()
PRICE = 50  # sats: 1 GB-month at the test price covers this small blob
FEE_PPK = 100  # the test mints' input fee: 1 sat for up to 10 proofs
VENV = MINT_DIR / ".venv"
INSTALLED = VENV / ".installed"


def ensure_venv() -> Path:
    """The mint's virtualenv, made (once, under a lock) if `make test` has not made it."""
    with open(MINT_DIR / ".venv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        stamp = (MINT_DIR / "requirements.txt").stat().st_mtime
        if not INSTALLED.exists() or INSTALLED.stat().st_mtime < stamp:
            subprocess.run(["rm", "-rf", str(VENV)], check=True)
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
            subprocess.run(
                [
                    str(VENV / "bin" / "pip"),
                    "install",
                    "--quiet",
                    "--no-deps",
                    "-r",
                    str(MINT_DIR / "requirements.txt"),
                ],
                check=True,
            )
            INSTALLED.touch()
    return VENV / "bin"


@dataclass
class Mint:
    url: str
    process: subprocess.Popen
    home: Path

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start_mint(home: Path, *, fee_ppk: int = 100) -> Mint:
    bin_dir = ensure_venv()
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(home),
        "CASHU_DIR": str(home / "cashu"),
        "MINT_BACKEND_BOLT11_SAT": "FakeWallet",
        "MINT_LISTEN_HOST": "127.0.0.1",
        "MINT_LISTEN_PORT": str(port),
        "MINT_PRIVATE_KEY": secrets.token_hex(32),
        "MINT_DATABASE": str(home / "db"),
        "MINT_INPUT_FEE_PPK": str(fee_ppk),
        "MINT_RATE_LIMIT": "false",
        "FAKEWALLET_DELAY_INCOMING_PAYMENT": "0",
        "FAKEWALLET_BRR": "true",
    }
    with open(home / "mint.log", "wb") as log:  # the child keeps its own descriptor
        process = subprocess.Popen(
            [str(bin_dir / "mint")], cwd=home, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:  # ready when it answers its info endpoint
        if process.poll() is not None:
            raise AssertionError(f"mint exited: {(home / 'mint.log').read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/v1/keysets", timeout=2) as answer:
                if answer.status == 200:
                    return Mint(url, process, home)
        except OSError:
            if time.monotonic() > deadline:
                process.kill()
                raise AssertionError("mint did not start within 60 s") from None
            time.sleep(0.1)


async def wallet(*args: str) -> object:
    """Run the nutshell wallet helper (tests/cashu_mint/wallet.py); its JSON answer."""
    proc = await asyncio.create_subprocess_exec(
        str(VENV / "bin" / "python"),
        str(MINT_DIR / "wallet.py"),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()[-3000:]
    return json.loads(out.decode().strip().splitlines()[-1])


async def tokens(mint_url: str, wallet_dir, *amounts: int) -> list[str]:
    """cashuB tokens of exactly these amounts, minted by a nutshell wallet kept in `wallet_dir`."""
    made = await wallet("tokens", mint_url, str(wallet_dir), *(str(a) for a in amounts))
    assert isinstance(made, list)
    return made


async def states(mint_url: str, wallet_dir, *made: str) -> list[list[str]]:
    """Each token's proof states at the mint (NUT-07): UNSPENT, PENDING or SPENT."""
    found = await wallet("states", mint_url, str(wallet_dir), *made)
    assert isinstance(found, list)
    return found


def fee_of(token: str) -> int:
    return math.ceil(len(parse_token(token).proofs) * FEE_PPK / 1000)


def cashu_settings(settings, mint_url: str, **more):
    """No free allowance, the mint trusted (named with a trailing slash, which is not part of its
    name), a short mint timeout, and a per-pubkey credit rate out of the way (tested on its own)."""
    return settings.model_copy(
        update={
            "free_storage_bytes": 0,
            "cashu_mints": mint_url + "/",
            "cashu_timeout_seconds": 2,
            "credit_requests_per_pubkey": "100000/minute",
            **more,
        }
    )


def upload_headers(key: SecretKey, token: str | None = None) -> dict[str, str]:
    headers = {**blossom_header(key, "upload", x=[SHA]), "X-SHA-256": SHA}
    if token is not None:
        headers["X-Cashu"] = token
    return headers


async def account(client, key: SecretKey) -> dict:
    return await (await client.get("/account", params=auth_params(key, "Authenticate User"))).json()


class MintProxy:
    """The mint behind a proxy on loopback that, when told, passes a swap to the mint and then never
    answers (`hang_swaps`: the mint has spent the token and signed our outputs, and the server never
    hears of it), or answers the restore endpoint itself (`restore_answer`: status and JSON body)."""

    def __init__(self, mint_url: str) -> None:
        self.mint_url = mint_url
        self.hang_swaps = False
        self.restore_answer: tuple[int, dict] | None = None
        self.calls: dict[str, int] = {}
        self.swaps_passed = 0
        self.never = asyncio.Event()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.calls[request.path] = self.calls.get(request.path, 0) + 1
        if request.path == "/v1/restore" and self.restore_answer is not None:
            status, answer = self.restore_answer
            return web.json_response(answer, status=status)
        async with (
            ClientSession() as session,
            session.request(
                request.method,
                self.mint_url + request.path_qs,
                data=body,
                headers={"Content-Type": "application/json"},
            ) as answer,
        ):
            payload, status = await answer.read(), answer.status
        if request.path == "/v1/swap":
            self.swaps_passed += 1
            if self.hang_swaps:
                await self.never.wait()
        return web.Response(body=payload, status=status, content_type="application/json")

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        return f"http://127.0.0.1:{port}"
