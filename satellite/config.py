"""Settings, read once from environment variables (or a `.env` file) into one typed object.

Every setting is an environment variable of the same name in upper case (`PORT`, `DATA_DIR`, ...).
Nothing reads the environment anywhere else: parts of the server receive the values they need.
"""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from satellite.billing.policy import AccountPolicy
from satellite.client_ip import IPNetwork, parse_networks
from satellite.limits import Limits, parse_rule

if TYPE_CHECKING:  # the upload pipeline (and aiohttp) stays unloaded for commands that do not need it
    from satellite.imaging import ImageLimits
    from satellite.ingest import Pace

DEFAULT_TRACKERS = (
    "udp://tracker.opentrackr.org:1337/announce,"
    "udp://open.demonii.com:1337/announce,"
    "udp://tracker.openbittorrent.com:6969/announce,"
    "wss://tracker.openwebtorrent.com,"
    "wss://tracker.btorrent.xyz"
)


class ConfigError(ValueError):
    """A setting that cannot work, found while starting; the message names the setting."""


class Environment(StrEnum):
    DEV = "dev"
    PRODUCTION = "production"


class LogFormat(StrEnum):
    AUTO = "auto"
    CONSOLE = "console"
    JSON = "json"


class LightningBackendName(StrEnum):
    DEV = "dev"
    LND = "lnd"
    LNBITS = "lnbits"
    CLN = "cln"


class StorageBackendName(StrEnum):
    LOCAL = "local"
    S3 = "s3"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    environment: Environment = Environment.DEV
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    # HTTP worker processes sharing the port (SO_REUSEPORT); each has its own database pool.
    workers: int = Field(1, ge=1, le=64)
    # Base of every public URL we hand out (file URLs, magnets, callbacks). Empty: http://HOST:PORT.
    public_url: str = ""
    data_dir: Path = Path("data")
    # Empty: an embedded PostgreSQL server is started under DATA_DIR/postgres.
    database_url: str = ""
    database_pool_size: int = Field(10, ge=1, le=200)
    # How long a request waits for a free database connection before it is answered 503.
    database_acquire_timeout_seconds: float = Field(5.0, gt=0)
    # Empty: DATA_DIR/blobs.
    storage_dir: Path | None = None
    max_upload_bytes: int = Field(5 * 1024**3, ge=1)
    storage_backend: StorageBackendName = StorageBackendName.LOCAL
    # S3-compatible object storage (AWS S3, R2, MinIO, Ceph RGW, Garage, B2). Empty credentials: the
    # standard AWS chain (AWS_* variables, config files, instance roles).
    s3_bucket: str = ""
    s3_endpoint_url: str = ""
    s3_region: str = "us-east-1"
    s3_prefix: str = ""
    s3_access_key_id: str = ""
    s3_secret_access_key: str = ""
    s3_addressing_style: str = Field("auto", pattern="^(auto|path|virtual)$")
    s3_part_size: int = Field(16 * 1024**2, ge=5 * 1024**2)
    s3_multipart_threshold: int = Field(64 * 1024**2, ge=5 * 1024**2)
    s3_concurrency: int = Field(4, ge=1, le=64)
    s3_max_attempts: int = Field(4, ge=1, le=20)
    # A public base URL of the bucket (a CDN, R2 public domain, public bucket): blob URLs point there and
    # GET /<sha256> redirects there. Empty: we stream objects through this server.
    s3_public_url: str = ""
    auth_window_seconds: int = Field(600, ge=1)
    # NIP-98 (the NIP-96 routes): created_at must be within this many seconds of the server's clock.
    nip98_window_seconds: int = Field(60, ge=1)
    # Hex or nsec. Empty: generated once and kept in DATA_DIR/service.key (mode 0600).
    service_key: str = ""
    # Comma-separated announce URLs put in magnets and .torrent files.
    trackers: str = DEFAULT_TRACKERS
    log_format: LogFormat = LogFormat.AUTO
    log_level: str = "info"

    # --- billing ---
    # Price in USD per GB-month (GB = 10^9 bytes, month = 2,592,000 s), shown as rateFiat.usd.
    rate_usd_per_gb_month: Decimal = Field(Decimal("0.05"), gt=0)
    # A fixed price in sats per GB-month; 0 means: convert the USD rate with live exchange rates.
    price_sats_per_gb_month: int = Field(50, ge=0)
    # Exchange-rate providers (used when PRICE_SATS_PER_GB_MONTH is 0), queried together; each entry may
    # give its own base URL as name=url.
    exchange_rate_providers: str = "coinbase,kraken,bitstamp,coingecko"
    exchange_rate_timeout_seconds: float = Field(3.0, gt=0)
    exchange_rate_ttl_seconds: int = Field(60, ge=1)
    exchange_rate_stale_seconds: int = Field(900, ge=0)
    max_gb_months: int = Field(120, ge=1)
    # At least two minutes: an offer with less than one minute left is not invoiced any more.
    offer_ttl_seconds: int = Field(900, ge=120)
    free_storage_bytes: int = Field(0, ge=0)
    # Above the free allowance, an upload must leave this much prepaid time for storing everything the
    # account then holds (so a little credit cannot admit a file of any size).
    min_prepaid_seconds: int = Field(86_400, ge=1)
    # Relays named in the kind 9734 payment template (NIP-57 requires at least one).
    relays: str = "wss://relay.damus.io,wss://nos.lol"
    lnurl_name: str = "storage"
    # `satellite expire` removes the files of accounts whose credit ran out longer ago than this.
    expire_grace_days: int = Field(7, ge=0)

    # --- lightning ---
    lightning_backend: LightningBackendName = LightningBackendName.DEV
    # The dev node settles invoices only when told to (`satellite dev-pay`); production refuses it
    # unless this is set.
    allow_dev_lightning: bool = False
    lnd_rest_url: str = ""
    lnd_macaroon: str = ""  # hex
    lnd_macaroon_file: Path | None = None
    lnd_tls_cert_file: Path | None = None
    lnbits_url: str = ""
    lnbits_api_key: str = ""  # an invoice/read key is enough
    lnbits_api_key_file: Path | None = None
    cln_rest_url: str = ""
    cln_rune: str = ""
    cln_rune_file: Path | None = None
    cln_tls_cert_file: Path | None = None
    settlement_poll_seconds: float = Field(30.0, gt=0)
    # The longest an LNURL callback waits for the node to create an invoice before answering 503.
    lightning_timeout_seconds: float = Field(10.0, gt=0)

    # --- abuse limits (shared by every process on the database) ---
    # Peers whose X-Forwarded-For / Forwarded headers are believed: comma-separated addresses or CIDR
    # networks (your reverse proxy). Empty: never believed; the peer address is the client.
    trusted_proxies: str = ""
    # The one header those proxies write: x-forwarded-for or forwarded. The other is never read (a
    # proxy passes on whatever the client put in a header it does not write itself).
    proxy_header: str = Field("x-forwarded-for", pattern="^(x-forwarded-for|forwarded)$")
    # Rates are N/second, N/minute, N/hour or N/day (a burst of N, then N per unit), or off. An address
    # is an IPv4 address or an IPv6 /64.
    auth_failures_per_ip: str = "10/minute"
    credit_requests_per_ip: str = "10/minute"
    credit_requests_per_pubkey: str = "5/minute"
    uploads_per_ip: str = "600/minute"
    uploads_per_pubkey: str = "300/minute"
    # Every other authenticated request (GET /account, DELETE /item).
    requests_per_ip: str = "600/minute"
    requests_per_pubkey: str = "300/minute"
    # A 429 is answered after a pause of up to this long (never longer than its Retry-After), then the
    # connection is closed: a client asking again at once, in a loop, costs little.
    rate_limited_delay_seconds: float = Field(2.0, ge=0)
    # Uploads one pubkey may have in progress at once (0: no cap).
    max_concurrent_uploads_per_pubkey: int = Field(8, ge=0)

    # --- connections (each worker process on its own) ---
    # Open connections per process; 0: as many as the fd limit allows ((limit - 256) / 2; the limit is
    # raised to its hard maximum at start). Connections over it are answered 503 and closed.
    max_connections: int = Field(0, ge=0)
    # Open connections one client address may hold (IPv4 address or IPv6 /64; never TRUSTED_PROXIES);
    # 0: no cap.
    max_connections_per_ip: int = Field(64, ge=0)
    # A request's headers must be complete this long after their first byte (answered 408 if not).
    header_timeout_seconds: float = Field(10.0, gt=0)
    # An idle kept-alive connection is closed after this long.
    keepalive_timeout_seconds: float = Field(30.0, gt=0)
    # An upload must bring at least BODY_MIN_BYTES_PER_SECOND on average over every window of this long
    # (answered 408 and closed if not).
    body_timeout_seconds: float = Field(30.0, gt=0)
    body_min_bytes_per_second: int = Field(1024, ge=0)
    # A response the client stops reading is cut after this long without progress.
    send_timeout_seconds: float = Field(60.0, gt=0)
    # On SIGTERM, requests in flight (uploads among them) get this long to finish.
    shutdown_timeout_seconds: float = Field(30.0, gt=0)

    # --- observability ---
    # Where GET /metrics is served: empty, on the main address; host:port, there instead (and not on
    # the main address).
    metrics_listen: str = Field("", pattern=r"^$|^.+:\d{1,5}$")
    # If set, /metrics answers only `Authorization: Bearer <METRICS_TOKEN>`.
    metrics_token: str = ""
    # How often stored bytes and blobs (one aggregate query) and the pool are sampled for /metrics.
    metrics_sample_seconds: float = Field(15.0, gt=0)

    # --- moderation ---
    # How blocked content is answered: 404 (as if it never existed) or 451 (Unavailable For Legal Reasons).
    blocked_content_status: int = Field(404)
    # Reports (PUT /report) kept while unresolved; past this, new ones are refused (503).
    max_open_reports: int = Field(10_000, ge=1)

    # --- paying from any client (BUD-07: an invoice in the 402's X-Lightning) ---
    # The invoice buys the blob's size for at least this many months, in whole GB-months...
    payment_min_months: int = Field(1, ge=1, le=120)
    # ...and never less than this many GB-months.
    payment_min_gb_months: int = Field(1, ge=1)

    # --- paying with Cashu (NUT-24: a payment request in the 402's X-Cashu) ---
    # The mints whose tokens are taken, comma-separated URLs; empty (the default): no Cashu at all.
    cashu_mints: str = ""
    # A mint must answer each call within this; a swap left unanswered is recovered on the next try.
    cashu_timeout_seconds: float = Field(10.0, gt=0)
    # Tokens of more proofs are refused (the server pays each one's input fee out of the token).
    cashu_max_proofs: int = Field(64, ge=1, le=1000)

    # --- images (PUT /media, NIP-94 dim and blurhash) ---
    # Larger images (width x height) are refused (422) before any decoding.
    image_max_pixels: int = Field(50_000_000, ge=1)
    # PUT /media scales images down to at most this many pixels on their longer side.
    image_max_edge: int = Field(2560, ge=16)
    # One image's processing is stopped (its worker process killed) after this long.
    image_timeout_seconds: float = Field(20.0, gt=0)
    # Worker processes images are processed in, at most.
    image_workers: int = Field(2, ge=1, le=32)

    # --- mirroring (PUT /mirror) ---
    # The origin must answer within these; its body must keep the same pace as an upload's.
    mirror_connect_timeout_seconds: float = Field(10.0, gt=0)
    mirror_header_timeout_seconds: float = Field(15.0, gt=0)
    mirror_max_redirects: int = Field(5, ge=0, le=20)
    # For tests only: also fetch from loopback addresses (never any other private one).
    mirror_allow_loopback: bool = False

    # --- housekeeping ---
    # How often spent auth events, lapsed offers, full rate-limit buckets and dead upload leases are
    # deleted.
    prune_every_seconds: float = Field(60.0, gt=0)
    # Invoices never paid are kept this long after they lapse (for reconciliation), then deleted.
    unpaid_invoice_retention_days: int = Field(30, ge=1)
    # How often spool files left by dead processes (uploads cut off by a crash) are removed.
    spool_sweep_seconds: float = Field(300.0, gt=0)

    @field_validator("public_url", "s3_public_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator(
        "storage_dir",
        "lnd_macaroon_file",
        "lnd_tls_cert_file",
        "lnbits_api_key_file",
        "cln_rune_file",
        "cln_tls_cert_file",
        mode="before",
    )
    @classmethod
    def _empty_is_default(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("service_key")
    @classmethod
    def _valid_key(cls, value: str) -> str:
        if value:
            from satellite.nostr.keys import InvalidKey, SecretKey

            try:
                SecretKey.parse(value)
            except InvalidKey as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("cashu_mints")
    @classmethod
    def _mint_urls(cls, value: str) -> str:
        for url in (u.strip() for u in value.split(",")):
            if url and not url.startswith(("https://", "http://")):
                raise ValueError(f"CASHU_MINTS: {url!r} is not an http(s) URL")
        return value

    @property
    def cashu_mint_list(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(u.strip().rstrip("/") for u in self.cashu_mints.split(",") if u.strip()))

    @field_validator("relays")
    @classmethod
    def _some_relay(cls, value: str) -> str:
        if not [r for r in value.split(",") if r.strip()]:
            raise ValueError("name at least one relay (NIP-57 payment events must carry a relays tag)")
        return value

    @field_validator(
        "auth_failures_per_ip",
        "credit_requests_per_ip",
        "credit_requests_per_pubkey",
        "uploads_per_ip",
        "uploads_per_pubkey",
        "requests_per_ip",
        "requests_per_pubkey",
    )
    @classmethod
    def _valid_rate(cls, value: str) -> str:
        parse_rule(value)  # InvalidRule is a ValueError: reported with the setting's name
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _valid_proxies(cls, value: str) -> str:
        parse_networks(value)
        return value

    @field_validator("blocked_content_status")
    @classmethod
    def _blocked_status(cls, value: int) -> int:
        if value not in (404, 451):
            raise ValueError("BLOCKED_CONTENT_STATUS must be 404 or 451")
        return value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        if value.lower() not in {"debug", "info", "warning", "error"}:
            raise ValueError("LOG_LEVEL must be debug, info, warning or error")
        return value.lower()

    @property
    def account_policy(self) -> AccountPolicy:
        return AccountPolicy(free_bytes=self.free_storage_bytes, min_prepaid_seconds=self.min_prepaid_seconds)

    @property
    def limits(self) -> Limits:
        return Limits(
            auth_failures_per_ip=parse_rule(self.auth_failures_per_ip),
            credit_per_ip=parse_rule(self.credit_requests_per_ip),
            credit_per_pubkey=parse_rule(self.credit_requests_per_pubkey),
            uploads_per_ip=parse_rule(self.uploads_per_ip),
            uploads_per_pubkey=parse_rule(self.uploads_per_pubkey),
            requests_per_ip=parse_rule(self.requests_per_ip),
            requests_per_pubkey=parse_rule(self.requests_per_pubkey),
            concurrent_uploads_per_pubkey=self.max_concurrent_uploads_per_pubkey,
        )

    @property
    def trusted_proxy_networks(self) -> tuple[IPNetwork, ...]:
        return parse_networks(self.trusted_proxies)

    @property
    def image_limits(self) -> ImageLimits:
        from satellite.imaging import ImageLimits

        return ImageLimits(max_pixels=self.image_max_pixels, max_edge=self.image_max_edge)

    @property
    def body_pace(self) -> Pace:
        from satellite.ingest import Pace

        return Pace(
            window_seconds=self.body_timeout_seconds, min_bytes_per_second=self.body_min_bytes_per_second
        )

    @property
    def base_url(self) -> str:
        return self.public_url or f"http://{self.host}:{self.port}"

    @property
    def redirect_base(self) -> str | None:
        """Where blob URLs point when objects are served straight from the bucket's public URL."""
        if self.storage_backend == StorageBackendName.S3 and self.s3_public_url:
            return f"{self.s3_public_url}/{self.s3_prefix}"
        return None

    @property
    def blob_dir(self) -> Path:
        return self.storage_dir if self.storage_dir is not None else self.data_dir / "blobs"

    @property
    def staging_dir(self) -> Path:
        """Where uploads are spooled, whatever the store: under the local blob dir, so the final rename
        of a local blob never crosses filesystems."""
        return self.blob_dir / "tmp"

    @property
    def tracker_list(self) -> list[str]:
        return [t.strip() for t in self.trackers.split(",") if t.strip()]

    @property
    def relay_list(self) -> list[str]:
        return [r.strip() for r in self.relays.split(",") if r.strip()]

    @property
    def provider_list(self) -> list[str]:
        return [p.strip() for p in self.exchange_rate_providers.split(",") if p.strip()]

    @property
    def json_logs(self) -> bool:
        if self.log_format == LogFormat.AUTO:
            return self.environment == Environment.PRODUCTION
        return self.log_format == LogFormat.JSON
