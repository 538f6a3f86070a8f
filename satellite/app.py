"""create_app(settings): wiring only. Resources open and close in cleanup contexts; one route table."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypedDict

import aiohttp
import structlog
from aiohttp import web

from satellite import housekeeping
from satellite.api import account, billing, blossom, dashboard, items, media, nip96, openapi, service
from satellite.api.access_log import access_log_middleware
from satellite.api.client import client_middleware
from satellite.api.errors import error_middleware
from satellite.api.observe import observe_request, sample_forever
from satellite.auth import MAX_AUTH_CHARS, AuthRules
from satellite.billing import allowance
from satellite.billing.cashu_pay import CashuPay, CashuRules
from satellite.billing.pricing import build_price
from satellite.billing.purchase import Shop
from satellite.billing.watcher import SettlementWatcher
from satellite.blob_cache import BlobCache, follow_changes
from satellite.blossom_auth import TokenRules, domain_of
from satellite.cashu.mint_client import MintClient
from satellite.config import Environment, LightningBackendName, Settings
from satellite.cors import add_common_headers, preflight_middleware
from satellite.db.database import database
from satellite.db.pool import TRANSIENT_ERRORS, create_pool
from satellite.deps import CLOCK, DEPS, METRICS, SETTINGS, SUPERVISOR, Clock, Deps
from satellite.image_worker import ImageWorker
from satellite.ingest import ingest_threads
from satellite.lightning.registry import build_backend
from satellite.links import Links
from satellite.metrics import Metrics
from satellite.nip98 import HttpAuthRules
from satellite.nostr.keys import load_or_create_service_key
from satellite.origin_fetch import FetchRules
from satellite.preflight import check_settings
from satellite.request_state import REQUEST_OBSERVER
from satellite.staging import sweep_spools
from satellite.storage.factory import open_storage
from satellite.supervisor import Supervisor
from satellite.throttle import Throttle

log = structlog.get_logger("satellite.app")
API_PREFIXES = ("", "/v1/media")


# The auth event travels in the query string: a request line must fit the largest event we accept,
# percent-encoded (up to 9 characters per character for non-ASCII text).
# read_bufsize: how much request body a connection buffers before reading pauses; the default 64 KiB
# makes a large upload stop and restart the socket's reading every few hundred KiB.
# auto_decompress: never inflate a request body; limits apply to the bytes stored, and an encoded upload
# is refused (ingest.announce).
class HttpLimits(TypedDict):
    max_line_size: int
    max_field_size: int
    read_bufsize: int
    auto_decompress: bool
    lingering_time: float


HTTP_LIMITS: HttpLimits = {
    "max_line_size": 9 * MAX_AUTH_CHARS + 4096,
    "max_field_size": 16 * 1024,
    "read_bufsize": 1 << 20,
    "auto_decompress": False,
    # After refusing a request whose body is still coming, read and drop the rest for this long (so
    # the client can read the answer) before closing: short, so a slow client cannot hold on.
    "lingering_time": 2.0,
}


async def _resources(app: web.Application) -> AsyncGenerator[None, None]:
    settings = app[SETTINGS]
    check_settings(settings)  # before anything is started or created
    async with contextlib.AsyncExitStack() as stack:
        storage = await open_storage(settings)  # an unreachable bucket stops start-up here
        stack.push_async_callback(storage.aclose)
        dsn = (await stack.enter_async_context(database(settings, create=True))).dsn
        pool = await create_pool(
            dsn,
            max_size=settings.database_pool_size,
            acquire_timeout=settings.database_acquire_timeout_seconds,
        )
        stack.push_async_callback(pool.close)
        await allowance.adopt(pool, settings.free_storage_bytes, datetime.fromtimestamp(app[CLOCK](), UTC))
        staging_dir = settings.staging_dir
        staging_dir.mkdir(parents=True, exist_ok=True)
        removed = await asyncio.to_thread(sweep_spools, staging_dir)
        if removed:
            log.info("removed unfinished uploads left by dead processes", count=removed)
        service_key = await asyncio.to_thread(
            load_or_create_service_key, settings.service_key, settings.data_dir / "service.key"
        )
        session = aiohttp.ClientSession()
        stack.push_async_callback(session.close)
        price = build_price(settings, session, clock=app[CLOCK])
        stack.push_async_callback(price.aclose)  # runs before the session closes
        lightning = build_backend(settings, session, pool)
        stack.push_async_callback(lightning.aclose)
        metrics = app[METRICS]
        blob_cache = BlobCache()
        threads = ingest_threads()
        images = ImageWorker(
            settings.image_limits,
            timeout_seconds=settings.image_timeout_seconds,
            processes=settings.image_workers,
        )
        stack.push_async_callback(images.aclose)
        stack.callback(threads.shutdown, wait=False, cancel_futures=True)
        shop = Shop(
            pool=pool,
            price=price,
            lightning=lightning,
            service_key=service_key,
            offer_ttl_seconds=settings.offer_ttl_seconds,
            relays=settings.relay_list,
            node_timeout_seconds=settings.lightning_timeout_seconds,
            clock=app[CLOCK],
            on_invoice=metrics.invoices_created.inc,
        )
        cashu = None
        if settings.cashu_mint_list:
            cashu = CashuPay(
                pool=pool,
                client=MintClient(session, timeout_seconds=settings.cashu_timeout_seconds),
                rules=CashuRules(
                    mints=settings.cashu_mint_list,
                    max_proofs=settings.cashu_max_proofs,
                    mint_timeout_seconds=settings.cashu_timeout_seconds,
                ),
                service_key=service_key,
                policy=settings.account_policy,
                now=lambda: datetime.fromtimestamp(app[CLOCK](), UTC),
            )
        app[DEPS] = Deps(
            settings=settings,
            pool=pool,
            storage=storage,
            staging_dir=staging_dir,
            service_key=service_key,
            auth_rules=AuthRules(window_seconds=settings.auth_window_seconds),
            links=Links(
                base_url=settings.base_url,
                trackers=tuple(settings.tracker_list),
                redirect_base=settings.redirect_base,
            ),
            blob_cache=blob_cache,
            price=price,
            policy=settings.account_policy,
            shop=shop,
            ingest_threads=threads,
            throttle=Throttle(
                pool,
                settings.limits,
                clock=app[CLOCK],
                on_refused=lambda limit: metrics.rate_limited.labels(limit).inc(),
            ),
            token_rules=TokenRules(domain=domain_of(settings.base_url)),
            http_auth_rules=HttpAuthRules(window_seconds=settings.nip98_window_seconds),
            fetch_rules=FetchRules(
                allow_loopback=settings.mirror_allow_loopback,
                max_redirects=settings.mirror_max_redirects,
                connect_timeout_seconds=settings.mirror_connect_timeout_seconds,
                header_timeout_seconds=settings.mirror_header_timeout_seconds,
            ),
            images=images,
            trusted_proxies=settings.trusted_proxy_networks,
            clock=app[CLOCK],
            cashu=cashu,
        )
        watcher = SettlementWatcher(
            dsn=dsn,
            pool=pool,
            backend=lightning,
            service_key=service_key,
            policy=settings.account_policy,
            poll_seconds=settings.settlement_poll_seconds,
            clock=app[CLOCK],
            on_settled=lambda outcome, lag: _settled(metrics, outcome, lag),
        )
        supervisor = app[SUPERVISOR]
        supervisor.start("settlement watcher", watcher.run)
        supervisor.start("blob cache follower", lambda: follow_changes(dsn, blob_cache))
        supervisor.start("pruning", lambda: _prune(app[DEPS]))
        supervisor.start("upload lease holder", lambda: app[DEPS].throttle.hold_leases(dsn))
        supervisor.start(
            "metrics sampling", lambda: sample_forever(metrics, pool, settings.metrics_sample_seconds)
        )
        supervisor.start("spool sweeping", lambda: _sweep_spools(staging_dir, settings.spool_sweep_seconds))
        log.info("ready", url=settings.base_url, pubkey=service_key.pubkey, storage=str(settings.blob_dir))
        try:
            yield
        finally:
            await supervisor.stop()


def _settled(metrics: Metrics, outcome: str, lag_seconds: float | None) -> None:
    metrics.invoices_settled.labels(outcome).inc()
    if lag_seconds is not None:
        metrics.settlement_lag.observe(max(0.0, lag_seconds))


async def _prune(deps: Deps) -> None:
    """Retention: spent auth events, offers nobody can use any more, full rate-limit buckets and the
    upload leases of dead processes, every PRUNE_EVERY_SECONDS (a setting)."""
    while True:
        await asyncio.sleep(deps.settings.prune_every_seconds)
        try:
            removed = await housekeeping.prune(
                deps.pool,
                now=deps.now(),
                limits=deps.settings.limits,
                unpaid_retention=timedelta(days=deps.settings.unpaid_invoice_retention_days),
            )
        except TRANSIENT_ERRORS as exc:
            log.warning("pruning failed", kind="pruning", error=str(exc))
            continue
        if any(removed.values()):
            log.info("pruned", **removed)


async def _sweep_spools(staging_dir: Path, every_seconds: float) -> None:
    """Spools left by processes that died while this one runs (a killed sibling worker)."""
    while True:
        await asyncio.sleep(every_seconds)
        removed = await asyncio.to_thread(sweep_spools, staging_dir)
        if removed:
            log.info("removed unfinished uploads left by dead processes", count=removed)


def create_metrics_app(main: web.Application) -> web.Application:
    """/metrics alone, for METRICS_LISTEN: the main app's metrics on an address of their own."""
    app = web.Application(middlewares=[error_middleware])
    app[service.MAIN_APP] = main
    app.on_response_prepare.append(add_common_headers)
    app.router.add_get("/metrics", service.metrics)
    return app


def create_app(settings: Settings, *, clock: Clock = time.time) -> web.Application:
    app = web.Application(
        middlewares=[access_log_middleware, client_middleware, preflight_middleware, error_middleware]
    )
    app[SETTINGS] = settings
    app[CLOCK] = clock
    app[SUPERVISOR] = Supervisor()
    app[METRICS] = Metrics()
    app[REQUEST_OBSERVER] = observe_request
    app.cleanup_ctx.append(_resources)
    app.on_response_prepare.append(add_common_headers)
    app[dashboard.ASSETS] = dashboard.load_assets()
    app.router.add_get("/", dashboard.root)
    app.router.add_get(dashboard.PREFIX + "{path:.+}", dashboard.asset)
    app.router.add_get("/healthz", service.healthz)
    app.router.add_get("/health", service.health)
    if not settings.metrics_listen:
        app.router.add_get("/metrics", service.metrics)
    app.router.add_get("/readyz", service.ready)
    app.router.add_get("/openapi.json", openapi.serve_openapi)
    for prefix in API_PREFIXES:
        app.router.add_put(f"{prefix}/item", items.put_item)
        app.router.add_delete(f"{prefix}/item", items.delete_item)
        app.router.add_get(f"{prefix}/account", account.get_account, allow_head=False)
        app.router.add_get(f"{prefix}/account/credit", billing.request_credit, allow_head=False)
    app.router.add_get(billing.CALLBACK_PATH, billing.lnurl_callback, allow_head=False)
    app.router.add_get("/.well-known/lnurlp/{name}", billing.lnurl_pay, allow_head=False)
    if settings.lightning_backend == LightningBackendName.DEV and settings.environment == Environment.DEV:
        app.router.add_post("/dev/pay", billing.dev_pay)
    # Blossom: served from the root, as the BUDs require.
    app.router.add_put("/upload", blossom.upload)
    app.router.add_route("HEAD", "/upload", blossom.check_upload)
    app.router.add_put("/media", blossom.media)
    app.router.add_route("HEAD", "/media", blossom.check_media)
    app.router.add_put("/mirror", blossom.mirror)
    app.router.add_put("/report", blossom.report)
    app.router.add_get("/list/{pubkey}", blossom.list_blobs, allow_head=False)
    # NIP-96, with NIP-98 auth.
    app.router.add_get("/.well-known/nostr/nip96.json", nip96.info)
    app.router.add_post(nip96.API_PATH, nip96.upload)
    app.router.add_get(nip96.API_PATH, nip96.list_files, allow_head=False)
    app.router.add_delete(nip96.API_PATH + "/{name}", nip96.delete)
    app.router.add_get(nip96.API_PATH + "/{name}", media.serve_path)
    app.router.add_get("/{name}", media.serve_path)  # GET and HEAD
    app.router.add_delete("/{name}", blossom.delete_blob)
    return app
