"""A real nutshell mint on loopback (its fake Lightning backend pays every mint quote at once), run from
its own virtualenv (tests/cashu_mint, made by `make test` or here on first use), and a nutshell wallet
against it."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from processes import free_port

MINT_DIR = Path(__file__).parent / "cashu_mint"
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
