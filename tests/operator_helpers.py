"""Running operator commands as an operator does: `python -m satellite <command>` in a subprocess, with
the same settings as the server under test (as environment variables), and seeding data through the
public API at chosen moments of the server's clock."""

from __future__ import annotations

import asyncio
import io
import json
import sys
from dataclasses import dataclass
from enum import Enum
from typing import Any

from billing_helpers import account, dev_pay, invoice_for, wait_for
from nostr_helpers import auth_params
from processes import server_env

from satellite.config import Settings
from satellite.nostr.keys import SecretKey

DAY = 86_400


def settings_env(settings: Settings, **extra: str) -> dict[str, str]:
    """Every setting as the environment variable the server reads."""
    env = server_env()
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, Enum):
            text = str(value.value)
        else:
            text = str(value)
        env[name.upper()] = text
    env.update(extra)
    return env


@dataclass
class Ran:
    code: int
    out: str
    err: str

    @property
    def json(self) -> Any:
        assert self.out.strip(), f"no output (exit {self.code}); stderr: {self.err[-2000:]}"
        return json.loads(self.out)


async def run(
    settings: Settings, *args: str, env: dict[str, str] | None = None, script: str | None = None
) -> Ran:
    """The command's exit code, stdout and stderr (within a minute)."""
    argv = [script] if script else ["-m", "satellite"]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *argv,
        *args,
        env=env or settings_env(settings),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return Ran(proc.returncode, out.decode(), err.decode())


async def ok(settings: Settings, *args: str, **kw: Any) -> Any:
    """Run with --json; it must exit 0; its JSON."""
    ran = await run(settings, *args, "--json", **kw)
    assert ran.code == 0, f"exit {ran.code}: {ran.err[-3000:]}"
    return ran.json


class Seeder:
    """Buys and uploads through the API as a client would, at a moment of the server's (fake) clock."""

    def __init__(self, client: Any, clock: Any) -> None:
        self.client = client
        self.clock = clock

    def at(self, days_ago: float) -> None:
        self.clock.offset = -days_ago * DAY

    def now(self) -> None:
        self.clock.offset = 0.0

    def _when(self) -> dict[str, int]:
        return {"created_at": int(self.clock())}

    async def buy(self, key: SecretKey, gb_months: int) -> None:
        before = (await account(self.client, key, **self._when()))["creditTotal"]
        _offer, _payment, pr = await invoice_for(self.client, key, gb_months, **self._when())
        assert (await dev_pay(self.client, pr)).status == 200

        async def credited() -> bool:
            return (await account(self.client, key, **self._when()))["creditTotal"] > before

        await wait_for(credited)

    async def upload(self, key: SecretKey, body: bytes) -> dict[str, Any]:
        resp = await self.client.put(
            "/item", params=auth_params(key, "Authorize Upload", **self._when()), data=io.BytesIO(body)
        )
        assert resp.status == 200, await resp.text()
        return await resp.json()

    async def account(self, key: SecretKey) -> dict[str, Any]:
        return await account(self.client, key, **self._when())
