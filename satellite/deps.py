"""Everything a request handler may use, built once at start-up in `app.py`."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
from aiohttp import web

from satellite.auth import AuthRules
from satellite.billing.cashu_pay import CashuPay
from satellite.billing.policy import AccountPolicy
from satellite.billing.pricing import Price
from satellite.billing.purchase import Shop
from satellite.blob_cache import BlobCache
from satellite.blossom_auth import TokenRules
from satellite.client_ip import IPNetwork
from satellite.config import Settings
from satellite.image_worker import ImageWorker
from satellite.links import Links
from satellite.metrics import Metrics
from satellite.nip98 import HttpAuthRules
from satellite.nostr.keys import SecretKey
from satellite.origin_fetch import FetchRules
from satellite.storage.base import BlobStorage
from satellite.supervisor import Supervisor
from satellite.throttle import Throttle

Clock = Callable[[], float]


@dataclass(frozen=True)
class Deps:
    settings: Settings
    pool: asyncpg.Pool
    storage: BlobStorage
    staging_dir: Path
    service_key: SecretKey
    auth_rules: AuthRules
    links: Links
    blob_cache: BlobCache
    price: Price
    policy: AccountPolicy
    shop: Shop
    ingest_threads: ThreadPoolExecutor
    throttle: Throttle
    token_rules: TokenRules
    http_auth_rules: HttpAuthRules
    fetch_rules: FetchRules
    images: ImageWorker
    trusted_proxies: tuple[IPNetwork, ...] = ()
    cashu: CashuPay | None = None  # None unless CASHU_MINTS names a mint
    clock: Clock = time.time

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)


DEPS = web.AppKey("deps", Deps)
SETTINGS = web.AppKey("settings", Settings)
CLOCK: web.AppKey[Clock] = web.AppKey("clock")
SUPERVISOR = web.AppKey("supervisor", Supervisor)
METRICS = web.AppKey("metrics", Metrics)
