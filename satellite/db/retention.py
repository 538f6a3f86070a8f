"""Deleting rows nobody needs any more, or (for a dry run) counting them with the same condition."""

from __future__ import annotations

from typing import Any

from satellite.db.types import Executor


async def delete_where(db: Executor, table: str, where: str, *args: Any, dry_run: bool = False) -> int:
    """Delete the rows of `table` matching `where` (placeholders $1...), or only count them."""
    if dry_run:
        return int(await db.fetchval(f"SELECT count(*) FROM {table} WHERE {where}", *args))
    status = await db.execute(f"DELETE FROM {table} WHERE {where}", *args)
    return int(str(status).split()[-1])
