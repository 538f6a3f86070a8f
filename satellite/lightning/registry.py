"""LIGHTNING_BACKEND -> a backend instance. Only the chosen backend's module is imported."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import asyncpg

from satellite.config import ConfigError, Environment, LightningBackendName, Settings
from satellite.lightning.base import LightningBackend
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


def build_backend(settings: Settings, session: aiohttp.ClientSession, pool: asyncpg.Pool) -> LightningBackend:
    try:
        return _build(settings, session, pool)
    except OSError as exc:  # an unreadable macaroon, rune or key file
        raise LightningConfigError(f"cannot read a {settings.lightning_backend.value} secret: {exc}") from exc
    except LightningConfigError:
        raise
    except ValueError as exc:  # a backend refusing its config (URL scheme, TLS certificate)
        raise LightningConfigError(f"LIGHTNING_BACKEND={settings.lightning_backend.value}: {exc}") from exc


def _build(settings: Settings, session: aiohttp.ClientSession, pool: asyncpg.Pool) -> LightningBackend:
    choice = settings.lightning_backend
    if choice == LightningBackendName.DEV:
        if settings.environment == Environment.PRODUCTION and not settings.allow_dev_lightning:
            raise LightningConfigError(
                "LIGHTNING_BACKEND=dev cannot take real payments; in production choose lnd, lnbits or cln"
                " (or set ALLOW_DEV_LIGHTNING=true to run the dev node anyway)"
            )
        from satellite.lightning.dev import DevBackend, DevConfig

        key = load_or_create_service_key("", settings.data_dir / "dev-node.key")
        return DevBackend(DevConfig(node_key_hex=key.raw.hex()), pool)
    if choice == LightningBackendName.LND:
        from satellite.lightning.lnd import LndBackend, LndConfig

        macaroon = _secret(settings.lnd_macaroon, settings.lnd_macaroon_file, binary=True)
        return LndBackend(
            LndConfig(
                url=_require(settings.lnd_rest_url, "LND_REST_URL"),
                macaroon_hex=_require(macaroon, "LND_MACAROON or LND_MACAROON_FILE"),
                tls_cert_path=settings.lnd_tls_cert_file,
            ),
            session,
        )
    if choice == LightningBackendName.LNBITS:
        from satellite.lightning.lnbits import LnbitsBackend, LnbitsConfig

        api_key = _secret(settings.lnbits_api_key, settings.lnbits_api_key_file)
        return LnbitsBackend(
            LnbitsConfig(
                url=_require(settings.lnbits_url, "LNBITS_URL"),
                api_key=_require(api_key, "LNBITS_API_KEY or LNBITS_API_KEY_FILE"),
            ),
            session,
        )
    from satellite.lightning.cln import ClnBackend, ClnConfig

    rune = _secret(settings.cln_rune, settings.cln_rune_file)
    return ClnBackend(
        ClnConfig(
            url=_require(settings.cln_rest_url, "CLN_REST_URL"),
            rune=_require(rune, "CLN_RUNE or CLN_RUNE_FILE"),
            tls_cert_path=settings.cln_tls_cert_file,
        ),
        session,
    )
