"""The web dashboard at `/`: a page that talks to this server only through its public APIs, as any
third-party app does (v1 auth events, Blossom tokens, the offer flow). `GET /` gives the page to a
browser (`Accept: text/html`) and the service description (JSON) to everything else.

The files come from `satellite/static`, read once at start-up: no build step, nothing from a CDN.
"""

from __future__ import annotations

import hashlib
import mimetypes
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

from satellite.api import service
from satellite.api.errors import ApiError
from satellite.deps import DEPS

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
PREFIX = "/app/"


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


def load_assets(root: Path = STATIC_DIR) -> dict[str, Asset]:
    """Every file under `root`, by its path below it."""
    assets = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix != ".py" and "__pycache__" not in path.parts:
            body = path.read_bytes()
            kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            if kind.startswith("text/") or kind in ("application/javascript", "text/javascript"):
                kind += "; charset=utf-8"
            assets[path.relative_to(root).as_posix()] = Asset(
                body, kind, f'"{hashlib.sha256(body).hexdigest()[:32]}"'
            )
    return assets


ASSETS: web.AppKey[dict[str, Asset]] = web.AppKey("dashboard_assets")


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else ""


def page_policy(cdn_urls: list[str]) -> str:
    """The page's Content-Security-Policy: its own scripts and styles only; media also from where the
    server publishes files."""
    media = " ".join(sorted({"'self'", *(o for o in map(_origin, cdn_urls) if o)}))
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self';"
        f" img-src {media} data:; media-src {media}; form-action 'none'; base-uri 'none';"
        " frame-ancestors 'none'"
    )


def _answer(request: web.Request, asset: Asset) -> web.Response:
    headers = {"ETag": asset.etag, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
    if request.headers.get("If-None-Match") == asset.etag:
        return web.Response(status=304, headers=headers)
    return web.Response(body=asset.body, headers={**headers, "Content-Type": asset.content_type})


def wants_page(request: web.Request) -> bool:
    """A browser navigating here: it asks for HTML. API clients ask for JSON or anything."""
    return "text/html" in request.headers.get("Accept", "")


async def root(request: web.Request) -> web.Response:
    """GET /: the dashboard for a browser, the service description for everything else."""
    if not wants_page(request):
        info = await service.info(request)
        info.headers["Vary"] = "Accept"  # a cache must not give this to a browser, nor the page to a client
        return info
    deps = request.app[DEPS]
    response = _answer(request, request.app[ASSETS]["index.html"])
    cdn = [deps.links.base_url]
    if deps.settings.s3_public_url:
        cdn.append(deps.settings.s3_public_url)
    response.headers["Content-Security-Policy"] = page_policy(cdn)
    response.headers["Vary"] = "Accept"
    return response


async def asset(request: web.Request) -> web.Response:
    """GET /app/<path>: one of the page's files."""
    found = request.app[ASSETS].get(request.match_info["path"])
    if found is None:
        raise ApiError(404, "no such file of the dashboard")
    return _answer(request, found)
