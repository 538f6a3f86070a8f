"""Read-only views for operators: accounts with their balances, revenue, lapsed accounts, usage
statistics. Nothing here writes; every query is one statement (a consistent snapshot)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from satellite.db.accounts import runs_out_at
from satellite.db.types import Executor


@dataclass(frozen=True, slots=True)
class AccountSummary:
    pubkey: str
    credit_byte_seconds: Decimal
    usage_byte_seconds: Decimal
    storage_bytes: int
    usage_updated_at: datetime
    runs_out_at: datetime | None  # None: everything it stores fits the free allowance
    files: int
    blocked: bool


async def accounts(db: Executor, *, free_bytes: int) -> list[AccountSummary]:
    rows = await db.fetch(
        "SELECT accounts.pubkey, credit_byte_seconds, usage_byte_seconds, storage_bytes, usage_updated_at,"
        f" {runs_out_at('$1::bigint')} AS runs_out_at,"
        " (SELECT count(*) FROM files f WHERE f.pubkey = accounts.pubkey) AS files,"
        " EXISTS (SELECT 1 FROM blocklist b WHERE b.kind = 'pubkey' AND b.value = accounts.pubkey) AS blocked"
        " FROM accounts ORDER BY accounts.pubkey",
        free_bytes,
    )
    return [AccountSummary(**dict(r)) for r in rows]


@dataclass(frozen=True, slots=True)
class Lapsed:
    pubkey: str
    ran_out_at: datetime
    storage_bytes: int


async def lapsed(db: Executor, *, before: datetime, free_bytes: int) -> list[Lapsed]:
    """Accounts whose credit ran out before `before` (so they store more than the allowance)."""
    rows = await db.fetch(
        f"SELECT pubkey, {runs_out_at('$2::bigint')} AS ran_out_at, storage_bytes FROM accounts"
        f" WHERE {runs_out_at('$2::bigint')} <= $1 ORDER BY 2, 1",
        before,
        free_bytes,
    )
    return [Lapsed(**dict(r)) for r in rows]


async def file_hashes(db: Executor, pubkey: str) -> list[str]:
    return [sha256 for sha256, _size in await account_files(db, pubkey)]


async def account_files(db: Executor, pubkey: str) -> list[tuple[str, int]]:
    """(sha256, size) of the account's files, oldest first."""
    rows = await db.fetch(
        "SELECT f.sha256, b.size FROM files f JOIN blobs b ON b.sha256 = f.sha256 WHERE f.pubkey = $1"
        " ORDER BY f.created_at, f.sha256",
        pubkey,
    )
    return [(r["sha256"], r["size"]) for r in rows]


async def owners_of(db: Executor, hashes: list[str]) -> dict[str, set[str]]:
    rows = await db.fetch("SELECT sha256, pubkey FROM files WHERE sha256 = ANY($1::text[])", hashes)
    owners: dict[str, set[str]] = {}
    for r in rows:
        owners.setdefault(r["sha256"], set()).add(r["pubkey"])
    return owners


async def owners(db: Executor, sha256: str) -> list[str]:
    rows = await db.fetch("SELECT pubkey FROM files WHERE sha256 = $1 ORDER BY created_at, pubkey", sha256)
    return [r["pubkey"] for r in rows]


async def open_invoices(db: Executor, pubkey: str) -> list[str]:
    """Payment hashes of the account's invoices handed out and not yet paid or lapsed."""
    rows = await db.fetch(
        "SELECT payment_hash FROM offers WHERE pubkey = $1 AND status = 'invoiced' ORDER BY invoiced_at",
        pubkey,
    )
    return [r["payment_hash"] for r in rows]


@dataclass(frozen=True, slots=True)
class RevenuePeriod:
    period: date
    sales: int
    msat: int
    usd: Decimal | None  # None when no sale of the period knows its exchange rate
    sales_without_rate: int  # sales made before rates were recorded: not in `usd`


async def revenue(
    db: Executor, *, since: datetime | None, until: datetime | None, by: str
) -> list[RevenuePeriod]:
    """Payments received (paid, and underpaid: the sats came in either way), by the UTC day or month
    they were paid in; USD at each sale's own rate."""
    assert by in ("day", "month")
    rows = await db.fetch(
        "SELECT date_trunc($1, paid_at AT TIME ZONE 'UTC')::date AS period, count(*) AS sales,"
        " sum(amount_received_msat) AS msat,"
        " sum(amount_received_msat / 1000.0 / sats_per_usd) AS usd,"
        " count(*) FILTER (WHERE sats_per_usd IS NULL) AS sales_without_rate"
        " FROM offers WHERE status IN ('paid', 'underpaid')"
        " AND ($2::timestamptz IS NULL OR paid_at >= $2) AND ($3::timestamptz IS NULL OR paid_at < $3)"
        " GROUP BY 1 ORDER BY 1",
        by,
        since,
        until,
    )
    return [RevenuePeriod(**dict(r)) for r in rows]


@dataclass(frozen=True, slots=True)
class TypeCount:
    type: str
    blobs: int
    bytes: int
    files: int


async def by_type(db: Executor) -> list[TypeCount]:
    rows = await db.fetch(
        "SELECT b.type, count(*) AS blobs, sum(b.size) AS bytes, coalesce(sum(o.owners), 0) AS files"
        " FROM blobs b LEFT JOIN (SELECT sha256, count(*) AS owners FROM files GROUP BY sha256) o"
        " ON o.sha256 = b.sha256 GROUP BY b.type ORDER BY bytes DESC, b.type"
    )
    return [TypeCount(**dict(r)) for r in rows]


@dataclass(frozen=True, slots=True)
class DayCount:
    day: date
    files: int
    bytes: int


async def uploads_by_day(db: Executor, *, since: datetime) -> list[DayCount]:
    """Files still stored, by the UTC day they were uploaded."""
    rows = await db.fetch(
        "SELECT (f.created_at AT TIME ZONE 'UTC')::date AS day, count(*) AS files, sum(b.size) AS bytes"
        " FROM files f JOIN blobs b ON b.sha256 = f.sha256 WHERE f.created_at >= $1 GROUP BY 1 ORDER BY 1",
        since,
    )
    return [DayCount(**dict(r)) for r in rows]


@dataclass(frozen=True, slots=True)
class TopAccount:
    pubkey: str
    storage_bytes: int
    files: int


async def top_accounts(db: Executor, *, limit: int) -> list[TopAccount]:
    rows = await db.fetch(
        "SELECT a.pubkey, a.storage_bytes, (SELECT count(*) FROM files f WHERE f.pubkey = a.pubkey) AS files"
        " FROM accounts a WHERE a.storage_bytes > 0 ORDER BY a.storage_bytes DESC, a.pubkey LIMIT $1",
        limit,
    )
    return [TopAccount(**dict(r)) for r in rows]


@dataclass(frozen=True, slots=True)
class Totals:
    accounts: int
    accounts_storing: int
    files: int
    blobs: int
    bytes: int
    owned_bytes: int  # what accounts are billed for (a blob counts once per owner)


async def totals(db: Executor) -> Totals:
    row = await db.fetchrow(
        "SELECT (SELECT count(*) FROM accounts) AS accounts,"
        " (SELECT count(*) FROM accounts WHERE storage_bytes > 0) AS accounts_storing,"
        " (SELECT count(*) FROM files) AS files, (SELECT count(*) FROM blobs) AS blobs,"
        " (SELECT coalesce(sum(size), 0) FROM blobs) AS bytes,"
        " (SELECT coalesce(sum(storage_bytes), 0) FROM accounts) AS owned_bytes"
    )
    assert row is not None
    return Totals(**dict(row))
