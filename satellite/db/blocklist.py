"""The blocklist: content (sha256) and accounts (pubkey) an operator has blocked, with the reason.

Blocked content is refused by `commit_upload` and not served; a blocked account is refused by
triggers on the rows it would write (sql/007): a file it would own, an offer it would buy, an offer it
would have invoiced. Those triggers raise SQLSTATE `ACCOUNT_BLOCKED`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from satellite.db.types import Executor

ACCOUNT_BLOCKED = "SA403"
Kind = Literal["sha256", "pubkey"]


def is_account_blocked(exc: BaseException) -> bool:
    """Whether a database error is the refusal of a blocked account's write."""
    return getattr(exc, "sqlstate", None) == ACCOUNT_BLOCKED


@dataclass(frozen=True, slots=True)
class Block:
    kind: str
    value: str
    reason: str
    created_at: datetime


async def add(db: Executor, kind: Kind, value: str, reason: str, now: datetime) -> bool:
    """Block `value`; True if it was not blocked before (the reason is replaced either way)."""
    inserted: bool = await db.fetchval(
        "INSERT INTO blocklist (kind, value, reason, created_at) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (kind, value) DO UPDATE SET reason = EXCLUDED.reason RETURNING (xmax = 0)",
        kind,
        value,
        reason,
        now,
    )
    return inserted


async def remove(db: Executor, kind: Kind, value: str) -> bool:
    status = await db.execute("DELETE FROM blocklist WHERE kind = $1 AND value = $2", kind, value)
    return str(status).endswith(" 1")


async def get(db: Executor, kind: Kind, value: str) -> Block | None:
    row = await db.fetchrow(
        "SELECT kind, value, reason, created_at FROM blocklist WHERE kind = $1 AND value = $2", kind, value
    )
    return Block(**dict(row)) if row else None


async def all_blocks(db: Executor, kind: Kind | None = None) -> list[Block]:
    rows = await db.fetch(
        "SELECT kind, value, reason, created_at FROM blocklist WHERE $1::text IS NULL OR kind = $1"
        " ORDER BY created_at, kind, value",
        kind,
    )
    return [Block(**dict(r)) for r in rows]
