"""What every operator command runs in: the server's settings, its database (never created here: a
missing or unmigrated one stops the command with a message naming where it looked), its storage when
the command touches storage, and the database's clock."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TextIO

import asyncpg

from satellite.billing.policy import AccountPolicy
from satellite.cli.args import when
from satellite.cli.output import Progress, to_json
from satellite.config import Settings
from satellite.nostr.keys import npub_encode
from satellite.storage.base import BlobStorage


@dataclass
class Operator:
    settings: Settings
    pool: asyncpg.Pool
    dsn: str
    storage_: BlobStorage | None
    as_json: bool
    clock_offset: timedelta = timedelta(0)  # the database's clock minus this machine's
    out: TextIO = sys.stdout
    err: TextIO = sys.stderr

    @property
    def storage(self) -> BlobStorage:
        assert self.storage_ is not None, "this command was not given storage"
        return self.storage_

    @property
    def policy(self) -> AccountPolicy:
        return self.settings.account_policy

    def now(self) -> datetime:
        """The database's time: every host and every command agree on it, whatever their own clocks."""
        return datetime.now(UTC) + self.clock_offset

    def progress(self, label: str, total: int | None = None) -> Progress:
        return Progress(self.err, label, total)

    def emit(self, data: object, text: str) -> None:
        """The result: `data` as JSON with --json, else `text` for people."""
        self.out.write((to_json(data) if self.as_json else text) + "\n")


def account_fields(pubkey: str) -> dict[str, str]:
    """How an account is named in every command's output: hex and npub."""
    return {"pubkey": pubkey, "npub": npub_encode(pubkey)}


def moment(text: str | None, now: datetime) -> datetime | None:
    """A --since/--until value (see `args.when`); a bad one stops the command with one line."""
    if text is None:
        return None
    try:
        return when(text, now)
    except ValueError as exc:
        raise SystemExit(f"satellite: {exc}") from None


@contextlib.asynccontextmanager
async def operator(settings: Settings, *, as_json: bool, storage: bool = False) -> AsyncIterator[Operator]:
    from satellite.billing import allowance
    from satellite.db.database import database
    from satellite.db.pool import create_pool
    from satellite.storage.factory import open_storage

    async with database(settings, create=False) as db:
        opened = await open_storage(settings) if storage else None
        try:
            async with await create_pool(db.dsn, max_size=4) as pool:
                await allowance.check(pool, settings.free_storage_bytes)
                offset = await pool.fetchval("SELECT clock_timestamp()") - datetime.now(UTC)
                yield Operator(settings, pool, db.dsn, opened, as_json, clock_offset=offset)
        finally:
            if opened is not None:
                await opened.aclose()
