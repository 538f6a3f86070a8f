"""LIGHTNING_BACKEND -> a backend instance, and the check of its settings before anything starts (a
missing or unreadable secret, a bad URL or certificate, the dev node in production). The dev node's
module (signing, database) is imported only when it is chosen."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import asyncpg

from satellite.config import ConfigError, Environment, LightningBackendName, Settings
from satellite.lightning.base import LightningBackend
from satellite.lightning.cln import ClnConfig
from satellite.lightning.lnbits import LnbitsConfig
from satellite.lightning.lnd import LndConfig
from satellite.nostr.keys import load_or_create_service_key


class LightningConfigError(ConfigError):
    """A missing or contradictory lightning setting; the message names it."""


def _secret(value: str, path: Path | None, *, binary: bool = False) -> str:
    if value:
        return value.strip()
    if path is not None:
        data = path.read_bytes()
        return data.hex() if binary else data.decode().strip()
    return ""


def _require(value: str, name: str) -> str:
    if not value:
        raise LightningConfigError(f"{name} must be set for LIGHTNING_BACKEND")
    return value


def check_settings(settings: Settings) -> None:
    """Raise LightningConfigError for a Lightning setting that cannot work, creating nothing (run before
    anything starts)."""
    with _naming_the_setting(settings):
        if settings.lightning_backend == LightningBackendName.DEV:
            _check_dev_allowed(settings)
        else:
            _remote_config(settings)


def build_backend(settings: Settings, session: aiohttp.ClientSession, pool: asyncpg.Pool) -> LightningBackend:
    with _naming_the_setting(settings):
        if settings.lightning_backend == LightningBackendName.DEV:
            _check_dev_allowed(settings)
            from satellite.lightning.dev import DevBackend, DevConfig

            key = load_or_create_service_key("", settings.data_dir / "dev-node.key")
            return DevBackend(DevConfig(node_key_hex=key.raw.hex()), pool)
        config = _remote_config(settings)
    if isinstance(config, LndConfig):
        from satellite.lightning.lnd import LndBackend

        return LndBackend(config, session)
    if isinstance(config, LnbitsConfig):
        from satellite.lightning.lnbits import LnbitsBackend

        return LnbitsBackend(config, session)
    from satellite.lightning.cln import ClnBackend

    return ClnBackend(config, session)


@contextlib.contextmanager
def _naming_the_setting(settings: Settings) -> Iterator[None]:
    try:
        yield
    except OSError as exc:  # an unreadable macaroon, rune or key file
        raise LightningConfigError(f"cannot read a {settings.lightning_backend.value} secret: {exc}") from exc
    except LightningConfigError:
        raise
    except ValueError as exc:  # a config refusing its values (URL scheme, TLS certificate)
        raise LightningConfigError(f"LIGHTNING_BACKEND={settings.lightning_backend.value}: {exc}") from exc


def _check_dev_allowed(settings: Settings) -> None:
    if settings.environment == Environment.PRODUCTION and not settings.allow_dev_lightning:
        raise LightningConfigError(
            "LIGHTNING_BACKEND=dev cannot take real payments; in production choose lnd, lnbits or cln"
            " (or set ALLOW_DEV_LIGHTNING=true to run the dev node anyway)"
        )


def _remote_config(settings: Settings) -> LndConfig | LnbitsConfig | ClnConfig:
    choice = settings.lightning_backend
    if choice == LightningBackendName.LND:
        macaroon = _secret(settings.lnd_macaroon, settings.lnd_macaroon_file, binary=True)
        return LndConfig(
            url=_require(settings.lnd_rest_url, "LND_REST_URL"),
            macaroon_hex=_require(macaroon, "LND_MACAROON or LND_MACAROON_FILE"),
            tls_cert_path=settings.lnd_tls_cert_file,
        )
    if choice == LightningBackendName.LNBITS:
        api_key = _secret(settings.lnbits_api_key, settings.lnbits_api_key_file)
        return LnbitsConfig(
            url=_require(settings.lnbits_url, "LNBITS_URL"),
            api_key=_require(api_key, "LNBITS_API_KEY or LNBITS_API_KEY_FILE"),
        )
    rune = _secret(settings.cln_rune, settings.cln_rune_file)
    return ClnConfig(
        url=_require(settings.cln_rest_url, "CLN_REST_URL"),
        rune=_require(rune, "CLN_RUNE or CLN_RUNE_FILE"),
        tls_cert_path=settings.cln_tls_cert_file,
    )
