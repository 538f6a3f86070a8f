"""What query functions accept: a pool for one statement, or a connection inside a transaction."""

from __future__ import annotations

import asyncpg
from asyncpg.pool import PoolConnectionProxy

Executor = asyncpg.Connection | asyncpg.Pool | PoolConnectionProxy
Connection = asyncpg.Connection | PoolConnectionProxy
