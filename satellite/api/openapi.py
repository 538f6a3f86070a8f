"""GET /openapi.json: the OpenAPI 3.1 description of every route, parameter, response and error body.

Pure data and small helpers that build it; `cdn.md` is the prose version. Every response documents the
headers every response carries (`X-Request-Id`, CORS), and every error response the one error body
(`Error`, as `satellite.api.errors` writes it, with `message` too on the NIP-96 routes) with its
`X-Reason` header.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from satellite.deps import DEPS

Json = dict[str, Any]

JSON = "application/json"
HEX64 = "^[0-9a-f]{64}$"
BLOB_NAME = "^[0-9a-f]{64}(\\.[A-Za-z0-9][A-Za-z0-9.]{0,31})?$"
AUTH_ACTIONS = {
    "upload": "Authorize Upload",
    "delete": "Delete Item",
    "account": "Authenticate User",
    "credit": "Request Storage",
}
API_PREFIXES = ("", "/v1/media")


def _schema(name: str) -> Json:
    return {"$ref": f"#/components/schemas/{name}"}


def _header(name: str) -> Json:
    return {"$ref": f"#/components/headers/{name}"}


def _json(schema: Json) -> Json:
    return {JSON: {"schema": schema}}


def _response(description: str, content: Json | None = None, headers: dict[str, Json] | None = None) -> Json:
    """A response with the headers every response carries, plus `headers`."""
    response: Json = {
        "description": description,
        "headers": {
            "X-Request-Id": _header("X-Request-Id"),
            "Access-Control-Allow-Origin": _header("Access-Control-Allow-Origin"),
            "Access-Control-Expose-Headers": _header("Access-Control-Expose-Headers"),
            **(headers or {}),
        },
    }
    if content is not None:
        response["content"] = content
    return response


def _ok(description: str, schema_name: str, headers: dict[str, Json] | None = None) -> Json:
    return _response(description, _json(_schema(schema_name)), headers)


def _error(
    description: str, *, lnurl: bool = False, nip96: bool = False, headers: dict[str, Json] | None = None
) -> Json:
    """An error response: the shared `Error` body (LUD-06's upper-case `ERROR` on LNURL routes, the reason
    also in `message` on NIP-96 routes) and the reason again in `X-Reason`."""
    status = {"const": "ERROR" if lnurl else "error"}
    shape: Json = {"properties": {"status": status}}
    if nip96:
        shape = {
            "required": ["message"],
            "properties": {"status": status, "message": {"type": "string", "description": "the reason"}},
        }
    body = {"allOf": [_schema("Error"), shape]}
    return _response(description, _json(body), {"X-Reason": _header("X-Reason"), **(headers or {})})


def _retry(description: str, *, lnurl: bool = False, nip96: bool = False) -> Json:
    return _error(description, lnurl=lnurl, nip96=nip96, headers={"Retry-After": _header("Retry-After")})


def _unauthorized(description: str, *, nip96: bool = False) -> Json:
    """401, with `WWW-Authenticate: Nostr`: sign a (new) token or NIP-98 event and ask again."""
    return _error(description, nip96=nip96, headers={"WWW-Authenticate": _header("WWW-Authenticate")})


# Errors, by the reasons an operation gives them.
def _bad_request(description: str = "malformed request", *, lnurl: bool = False, nip96: bool = False) -> Json:
    return _error(description, lnurl=lnurl, nip96=nip96)


INTERNAL = "unexpected server error (reason `internal server error`)"
BUSY = (
    "busy or briefly unavailable (every database connection taken, storage or the Lightning node not "
    "answering): nothing was recorded; retry after `Retry-After` seconds"
)
RATE_LIMITED = "too many requests from this client: retry after `Retry-After` seconds"
AUTH_REFUSED = (
    "the `auth` event failed a check (missing, malformed, wrong kind or content, stale, bad id or "
    "signature) or was already used; the reason names the rule"
)


def _auth_errors(bad_request: str) -> dict[str, Json]:
    """The errors of every authenticated operation."""
    return {
        "400": _bad_request(bad_request),
        "403": _error(AUTH_REFUSED),
        "429": _retry(RATE_LIMITED),
        "500": _error(INTERNAL),
        "503": _retry(BUSY),
    }


def _auth_parameter(action: str, *, required: bool = True, note: str = "") -> Json:
    return {
        "name": "auth",
        "in": "query",
        "required": required,
        "description": (
            "A signed Nostr event of kind 22242 with content `" + AUTH_ACTIONS[action] + "`, serialized "
            "as JSON (then URL-encoded). Single use; `created_at` within the server's window (±600 s "
            "unless configured). See cdn.md, Authentication." + note
        ),
        "schema": {"type": "string", "maxLength": 65536},
    }


TOKEN_REFUSED = (
    "no `Authorization: Nostr` token, or one that fails a rule (not base64 of a JSON event, wrong kind "
    "or verb, no or passed `expiration`, created in the future, `server` tags naming other servers, bad "
    "id or signature); the reason names the rule"
)
NOSTR_AUTHORIZATION: Json = {"type": "string", "pattern": "^Nostr [A-Za-z0-9+/_=-]+$", "maxLength": 16000}


def _token_parameter(verb: str, *, required: bool = True, note: str = "") -> Json:
    """`Authorization: Nostr <token>`, a BUD-11 token with the verb `verb`."""
    return {
        "name": "Authorization",
        "in": "header",
        "required": required,
        "description": (
            f"`Nostr <token>`: a signed Nostr event of kind 24242 (BUD-11) with `['t', '{verb}']` and an "
            "`expiration` tag in the future, serialized as JSON then base64url-encoded without padding "
            "(standard base64 is accepted too). Not spent: reusable until it expires. `server` tags, if "
            "any, must name this server's domain." + note
        ),
        "schema": NOSTR_AUTHORIZATION,
    }


def _token_errors(bad_request: str, refused: str = TOKEN_REFUSED) -> dict[str, Json]:
    """The errors of every operation that takes a Blossom token."""
    return {
        "400": _bad_request(bad_request),
        "401": _unauthorized(refused),
        "429": _retry(RATE_LIMITED),
        "500": _error(INTERNAL),
        "503": _retry(BUSY),
    }


def _operation(
    operation_id: str,
    summary: str,
    responses: dict[str, Json],
    *,
    tags: list[str],
    description: str | None = None,
    parameters: list[Json] | None = None,
    request_body: Json | None = None,
    extensions: Json | None = None,
) -> Json:
    operation: Json = {"operationId": operation_id, "summary": summary, "tags": tags}
    if description is not None:
        operation["description"] = description
    if parameters:
        operation["parameters"] = parameters
    if request_body is not None:
        operation["requestBody"] = request_body
    operation["responses"] = responses
    operation.update(extensions or {})
    return operation


def _bodiless(responses: dict[str, Json]) -> dict[str, Json]:
    """The responses without their bodies, as a HEAD request gets them."""
    return {
        status: {k: v for k, v in response.items() if k != "content"}
        for status, response in responses.items()
    }


def _head(get: Json) -> Json:
    """HEAD of a GET operation: the same statuses and headers, no body."""
    head = {**get, "operationId": get["operationId"] + "Head", "responses": _bodiless(get["responses"])}
    head["summary"] = get["summary"] + " (headers only)"
    return head


# --- service -------------------------------------------------------------------------------------------


def _service_paths() -> Json:
    info = _operation(
        "getServiceInfo",
        "What this server is (a browser, asking for text/html, gets the dashboard page instead)",
        {"200": _ok("service description", "ServiceInfo"), "500": _error(INTERNAL)},
        tags=["service"],
    )
    health = _operation(
        "getHealth",
        "Can the server reach its database",
        {
            "200": _ok("the database answers", "Health"),
            "500": _error(INTERNAL),
            "503": _retry("the database is unreachable or all its connections are busy"),
        },
        tags=["service"],
    )
    healthz = _operation(
        "getLiveness",
        "Is the process alive (liveness: touches nothing it depends on)",
        {"200": _ok("the process answers", "Health"), "500": _error(INTERNAL)},
        tags=["service"],
    )
    ready = _operation(
        "getReadiness",
        "Does every part of the server work: database, storage, supervised background tasks",
        {
            "200": _ok("every part works", "Readiness"),
            "500": _error(INTERNAL),
            "503": _response(
                "a part is failing; the reason names each",
                _json({"allOf": [_schema("Error"), _schema("ReadinessParts")]}),
                {"X-Reason": _header("X-Reason")},
            ),
        },
        tags=["service"],
    )
    spec = _operation(
        "getOpenApi",
        "This document",
        {
            "200": _response("the OpenAPI 3.1 description", _json({"type": "object"})),
            "500": _error(INTERNAL),
        },
        tags=["service"],
    )
    dashboard_file = _operation(
        "getDashboardFile",
        "A file of the dashboard page (its script, styles and vendored libraries)",
        {
            "200": _response(
                "the file",
                {"*/*": {"schema": {"type": "string"}}},
                {"ETag": _string_header("the file's version"), "Cache-Control": _string_header("no-cache")},
            ),
            "304": _response("unchanged since the ETag given in If-None-Match"),
            "404": _error("no such file of the dashboard"),
            "500": _error(INTERNAL),
        },
        tags=["service"],
        parameters=[
            {
                "name": "path",
                "in": "path",
                "required": True,
                "description": "e.g. `app.js`, `app.css`, `vendor/qrcode-generator-1.4.4/qrcode.js`",
                "schema": {"type": "string", "examples": ["app.js", "app.css", "index.html"]},
                "example": "app.js",
            }
        ],
    )
    metrics = _operation(
        "getMetrics",
        "Prometheus metrics",
        {
            "200": _response(
                "metrics in the Prometheus text exposition format",
                {"text/plain": {"schema": {"type": "string"}}},
            ),
            "401": _error("a metrics token is configured and the request does not carry it"),
            "404": _error("metrics are served on another address (`METRICS_ADDRESS`), not here"),
            "500": _error(INTERNAL),
        },
        tags=["service"],
        description=(
            "When the operator configures a metrics token, the request must carry it as "
            "`Authorization: Bearer <token>`."
        ),
        extensions={"security": [{}, {"metricsToken": []}]},
    )
    return {
        "/": {"get": info, "head": _head(info)},
        "/health": {"get": health, "head": _head(health)},
        "/healthz": {"get": healthz, "head": _head(healthz)},
        "/readyz": {"get": ready, "head": _head(ready)},
        "/openapi.json": {"get": spec, "head": _head(spec)},
        "/app/{path}": {"get": dashboard_file, "head": _head(dashboard_file)},
        "/metrics": {"get": metrics, "head": _head(metrics)},
    }


# --- the API: /item, /account, /account/credit, at the root and under /v1/media -------------------------


def _api_paths(prefix: str) -> Json:
    suffix = "V1" if prefix else ""
    mount = f" (also at `{'/v1/media' if not prefix else ''}{{path}}`)"
    put_item = _operation(
        "putItem" + suffix,
        "Upload a file",
        {
            "200": _ok("stored (or already stored): the file's description", "UploadedFile"),
            **_auth_errors(
                "bad `name`/`label`/`size` tag, `size` tag and Content-Length differ, empty, short, "
                "overlong or interrupted body"
            ),
            "402": _payment_required(
                "not enough storage credit: the reason says how many GB-months to buy with "
                "GET /account/credit"
            ),
            "403": _error(AUTH_REFUSED + "; or the content, or the account, is blocked on this server"),
            "408": _error("the body arrived too slowly"),
            "413": _error(
                "larger than the upload limit (`maxUploadBytes` in GET /), before or during the read"
            ),
            "415": _error("the body has a Content-Encoding: send the raw file"),
            "501": _error("a Transfer-Encoding other than chunked"),
        },
        tags=["files"],
        description=(
            "The body is the raw file (no multipart); its Content-Type is ignored and the type is "
            "identified from the bytes. Optional tags of the auth event: `name`, `size`, `label`."
            + mount.format(path="/item")
        ),
        parameters=[
            _auth_parameter("upload"),
            PROOF_PARAMETER,
            CASHU_PARAMETER,
            {
                "name": "Content-Encoding",
                "in": "header",
                "required": False,
                "description": "only `identity` is accepted (415 otherwise): limits apply to bytes stored",
                "schema": {"type": "string"},
            },
        ],
        request_body={
            "required": True,
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        },
    )
    delete_item = _operation(
        "deleteItem" + suffix,
        "Delete your ownership of a file",
        {
            "200": _ok("your ownership removed", "Deleted"),
            **_auth_errors("missing, conflicting or malformed `sha256`/`x` tag"),
            "404": _error("you do not own this file"),
        },
        tags=["files"],
        description="The auth event names the file with a `sha256` (or `x`) tag."
        + mount.format(path="/item"),
        parameters=[_auth_parameter("delete")],
    )
    either = (
        " Instead of `auth`, a Blossom token with `{verb}` in the Authorization header (used when `auth` is "
        "absent)."
    )
    token_refused = "the request has an Authorization header and no `auth`, and " + TOKEN_REFUSED
    account = _operation(
        "getAccount" + suffix,
        "Your account: totals, metered usage, files, purchases",
        {
            "200": _ok("the signer's account", "Account"),
            **_auth_errors("malformed request"),
            "401": _unauthorized(token_refused),
        },
        tags=["account"],
        description=(either.format(verb="['t', 'account']") + mount.format(path="/account")).strip(),
        parameters=[
            _auth_parameter("account", required=False, note=" Required unless Authorization is sent."),
            _token_parameter("account", required=False, note=" Used only when `auth` is absent."),
        ],
    )
    credit = _operation(
        "requestCredit" + suffix,
        "An offer to buy storage",
        {
            "200": _ok("a signed offer and the payment event to sign", "CreditOffer"),
            **_auth_errors("missing or invalid `gb_months` tag, or more than the maximum"),
            "401": _unauthorized(token_refused),
            "403": _error(AUTH_REFUSED + "; or the account is blocked on this server"),
            "503": _retry(BUSY + "; or live pricing has no exchange rate right now"),
        },
        tags=["billing"],
        description=(
            "The auth event (or token) carries a `gb_months` tag (1 to the server's maximum)."
            + either.format(verb="['t', 'credit']")
            + mount.format(path="/account/credit")
        ),
        parameters=[
            _auth_parameter("credit", required=False, note=" Required unless Authorization is sent."),
            _token_parameter("credit", required=False, note=" Used only when `auth` is absent."),
        ],
    )
    return {
        f"{prefix}/item": {"put": put_item, "delete": delete_item},
        f"{prefix}/account": {"get": account},
        f"{prefix}/account/credit": {"get": credit},
    }


# --- Lightning -----------------------------------------------------------------------------------------


def _billing_paths() -> Json:
    callback = _operation(
        "lnurlCallback",
        "LNURL-pay callback: a BOLT11 invoice for an offer",
        {
            "200": _ok("the invoice", "LnurlInvoice"),
            "400": _bad_request(
                "the payment event or the offer failed a check (the reason names it)", lnurl=True
            ),
            "500": _error(INTERNAL, lnurl=True),
            "502": _error(
                "the Lightning node refused, or its invoice has the wrong amount or description hash",
                lnurl=True,
            ),
            "503": _retry(BUSY, lnurl=True),
        },
        tags=["billing"],
        description='Errors come in LUD-06\'s shape: `{"status": "ERROR", "reason": ...}`.',
        parameters=[
            {
                "name": "amount",
                "in": "query",
                "required": True,
                "description": "the offer's amount in millisats, plain digits",
                "schema": {"type": "string"},
            },
            {
                "name": "nostr",
                "in": "query",
                "required": True,
                "description": "the signed kind 9734 payment event from GET /account/credit, as JSON",
                "schema": {"type": "string", "maxLength": 16384},
            },
        ],
    )
    lnurlp = _operation(
        "lnurlPay",
        "LUD-06/LUD-16 pay endpoint",
        {
            "200": _ok("the pay request description", "LnurlPayRequest"),
            "404": _error("not this server's LNURL name"),
            "500": _error(INTERNAL),
        },
        tags=["billing"],
        parameters=[
            {
                "name": "name",
                "in": "path",
                "required": True,
                "description": "the operator's `LNURL_NAME` (`storage` unless changed); other names are 404",
                "schema": {"type": "string", "pattern": "^[^/{}]+$"},
            }
        ],
    )
    dev_pay = _operation(
        "devPay",
        "Pay a dev-node invoice (development servers only)",
        {
            "200": _ok("paid", "DevPaid"),
            "400": _bad_request("bad body, or an unknown, expired or already paid invoice"),
            "500": _error(INTERNAL),
            "503": _retry(BUSY),
        },
        tags=["billing"],
        description=(
            "Exists only with `ENVIRONMENT=dev` and `LIGHTNING_BACKEND=dev`; elsewhere this path is 404."
        ),
        request_body={"required": True, "content": _json(_schema("DevPayRequest"))},
        extensions={"x-dev-only": True},
    )
    return {
        "/lnurl/callback": {"get": callback},
        "/.well-known/lnurlp/{name}": {"get": lnurlp},
        "/dev/pay": {"post": dev_pay},
    }


# --- public files --------------------------------------------------------------------------------------


def _string_header(description: str, *, required: bool = True, **schema: Any) -> Json:
    return {"description": description, "required": required, "schema": {"type": "string", **schema}}


def _payment_required(description: str) -> Json:
    """A 402 that may carry an invoice (BUD-07): pay it, then send the same request with its preimage."""
    return _error(
        description + "; X-Lightning, when present, is a BOLT11 invoice for what the blob needs: pay it "
        "and send the same request again with X-Lightning: <the payment's preimage>. X-Cashu, when the "
        "server takes Cashu, is a NUT-18 payment request (creqA) for the same: send the same request "
        "again with X-Cashu: <a cashuB token>",
        headers={
            "X-Lightning": _string_header("a BOLT11 invoice", required=False),
            "X-Cashu": _string_header("a NUT-18 payment request, creqA…", required=False),
        },
    )


PROOF_PARAMETER: Json = {
    "name": "X-Lightning",
    "in": "header",
    "required": False,
    "description": "the preimage of an invoice a 402 gave this pubkey, once paid (BUD-07): the account is "
    "credited, and the proof spent, before the upload is read; 400 if it proves no usable payment",
    "schema": {"type": "string"},
}

CASHU_PARAMETER: Json = {
    "name": "X-Cashu",
    "in": "header",
    "required": False,
    "description": "a cashuB token (NUT-24) from a mint a 402's X-Cashu request names, worth what it asks "
    "after the mint's input fee: swapped at the mint and credited before the upload is read; 400 if it "
    "cannot pay, 503 if the mint cannot be asked now (the token is not lost)",
    "schema": {"type": "string"},
}


IMMUTABLE = "public, max-age=31536000, immutable"
SANDBOX_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; sandbox"
TORRENT_CACHE = "public, max-age=3600"
BINARY: Json = {"schema": {"type": "string", "format": "binary"}}
CONTENT_LENGTH: Json = {
    "description": "bytes in this response (also on HEAD)",
    "required": True,
    "schema": {"type": "integer", "minimum": 0},
}


def _blob_headers(*, required: bool = True) -> dict[str, Json]:
    """The headers of a served file (`required=False` where the torrent shares the response)."""
    return {
        "Content-Length": CONTENT_LENGTH,
        "ETag": _string_header('`"<sha256>"`', required=required, pattern='^"[0-9a-f]{64}"$'),
        "Cache-Control": _string_header("content at a hash never changes", const=IMMUTABLE)
        if required
        else _string_header("immutable for a file, an hour for a torrent", enum=[IMMUTABLE, TORRENT_CACHE]),
        "Accept-Ranges": _string_header("ranges are served", required=required, const="bytes"),
        "X-Content-Type-Options": _string_header("the stored type is final", const="nosniff"),
        "Cross-Origin-Resource-Policy": _string_header(
            "pages on any site may embed the file", required=required, const="cross-origin"
        ),
        "Content-Security-Policy": _string_header(
            "only for active content (HTML, SVG, XML, JavaScript, ...): a sandbox",
            required=False,
            const=SANDBOX_CSP,
        ),
    }


def _content_range(*, required: bool) -> Json:
    return _string_header(
        "`bytes <first>-<last>/<size>`, or `bytes */<size>` on 416",
        required=required,
        pattern="^bytes ([0-9]+-[0-9]+|\\*)/[0-9]+$",
    )


def _content_disposition(*, required: bool) -> Json:
    return _string_header(
        '`attachment; filename="<sha256>.torrent"`',
        required=required,
        pattern='^attachment; filename="[0-9a-f]{64}\\.torrent"$',
    )


def _torrent_response() -> Json:
    return _response(
        "the torrent (bencoded metainfo; `url-list` is the file's public URL)",
        {"application/x-bittorrent": BINARY},
        {
            "Content-Length": CONTENT_LENGTH,
            "Content-Disposition": _content_disposition(required=True),
            "Cache-Control": _string_header("an hour", const=TORRENT_CACHE),
            "X-Content-Type-Options": _string_header("", const="nosniff"),
        },
    )


def _blob_paths() -> Json:
    name = {
        "name": "name",
        "in": "path",
        "required": True,
        "description": (
            "`<sha256>` or `<sha256>.<ext>` (64 lowercase hex; the extension, 1-32 letters, digits and dots, "
            "is not checked). `<sha256>.torrent` (any case) is the torrent. A path that looks like a hash "
            "but is not one answers 400, any other 404."
        ),
        "schema": {"type": "string", "pattern": BLOB_NAME},
    }
    request_headers = [
        {
            "name": "Range",
            "in": "header",
            "required": False,
            "description": "`bytes=<ranges>`, up to 16; a malformed value or other unit is ignored",
            "schema": {"type": "string"},
        },
        {
            "name": "If-None-Match",
            "in": "header",
            "required": False,
            "description": 'ETags (`"<sha256>"`, weak form accepted) or `*`: 304 when one matches',
            "schema": {"type": "string"},
        },
        {
            "name": "If-Range",
            "in": "header",
            "required": False,
            "description": "Range is honoured only when this is absent or the exact ETag",
            "schema": {"type": "string"},
        },
    ]
    serve = _operation(
        "getBlob",
        "A stored file, by its hash",
        {
            "200": _response(
                "the whole file in its stored type; for `<sha256>.torrent`, the torrent",
                {"*/*": BINARY, "application/x-bittorrent": BINARY},
                {
                    **_blob_headers(required=False),
                    "Content-Disposition": _content_disposition(required=False),
                },
            ),
            "206": _response(
                "one range (with Content-Range), or several as multipart/byteranges",
                {"*/*": BINARY, "multipart/byteranges": BINARY},
                {**_blob_headers(), "Content-Range": _content_range(required=False)},
            ),
            "307": _response(
                "the file is served from the bucket's public URL (S3_PUBLIC_URL): see Location",
                headers={
                    "Location": _string_header("the object's URL", format="uri"),
                    "Cache-Control": _string_header("", const=IMMUTABLE),
                },
            ),
            "304": _response(
                "If-None-Match matched: no body",
                headers={
                    "ETag": _string_header('`"<sha256>"`', pattern='^"[0-9a-f]{64}"$'),
                    "Cache-Control": _string_header("", const=IMMUTABLE),
                },
            ),
            "400": _bad_request("malformed hash in the path"),
            "404": _error("unknown, deleted or blocked"),
            "451": _error("blocked, where the operator answers blocked content so"),
            "416": _error(
                "no requested range overlaps the file",
                headers={"Content-Range": _content_range(required=True)},
            ),
            "500": _error(INTERNAL),
            "503": _retry(BUSY),
        },
        tags=["files"],
        description="Public, no auth. Range, conditional requests and HEAD as in cdn.md, Public files.",
        parameters=[name, *request_headers],
    )
    get_torrent = _operation(
        "getTorrent",
        "The BitTorrent v1 metainfo of a stored file, with the CDN as web seed",
        {
            "200": _torrent_response(),
            "400": _bad_request("malformed hash in the path"),
            "404": _error("unknown, deleted or blocked"),
            "451": _error("blocked, where the operator answers blocked content so"),
            "500": _error(INTERNAL),
            "503": _retry(BUSY),
        },
        tags=["files"],
        description="Served by the route of GET /{name}, with `{name}` = `<sha256>.torrent`.",
        parameters=[
            {
                "name": "sha256",
                "in": "path",
                "required": True,
                "description": "the file's SHA-256, 64 lowercase hex",
                "schema": {"type": "string", "pattern": HEX64},
            }
        ],
    )
    return {
        "/{sha256}.torrent": {"get": get_torrent, "head": _head(get_torrent)},
        "/{name}": {"get": serve, "head": _head(serve)},
    }


# --- Blossom (BUDs 01-12) and NIP-96 ----------------------------------------------------------------------

BLOB_NAME_PARAMETER: Json = {
    "name": "name",
    "in": "path",
    "required": True,
    "description": (
        "`<sha256>` or `<sha256>.<ext>` (64 lowercase hex; the extension is ignored). A path that looks "
        "like a hash but is not one answers 400, any other 404."
    ),
    "schema": {"type": "string", "pattern": BLOB_NAME},
}
UPLOAD_TOKEN = (
    " Its `x` tags must name the blob's sha256 (the X-SHA-256 sent, else the body's, checked once it is "
    "read)."
)
TOKEN_NAMES_NO_BLOB = TOKEN_REFUSED + "; or it has no `x` tag, or none naming the blob of X-SHA-256"
QUOTA = "not enough storage credit: the reason says how many GB-months to buy with GET /account/credit"
BLOCKED = "the content, or the account, is blocked on this server"


def _sha256_header(*, required: bool, description: str) -> Json:
    return {
        "name": "X-SHA-256",
        "in": "header",
        "required": required,
        "description": description + " (64 hex; upper case is accepted)",
        "schema": {"type": "string", "pattern": HEX64},
    }


def _pre_check(
    operation_id: str,
    summary: str,
    *,
    verb: str,
    thing: str,
    content_type: str,
    refused: dict[str, Json] | None = None,
) -> Json:
    """HEAD /upload and HEAD /media: would PUT /<verb> of this `thing` be accepted now?"""
    return _operation(
        operation_id,
        summary,
        _bodiless(
            {
                "200": _response(
                    f"yes: PUT /{verb} of this {thing} would be accepted now (nothing is stored)"
                ),
                **_token_errors(
                    "X-SHA-256 missing or malformed, X-Content-Length not a whole number, or 0",
                    TOKEN_REFUSED + "; or it has no `x` tag naming X-SHA-256",
                ),
                "402": _payment_required(QUOTA),
                "403": _error(BLOCKED),
                "411": _error("X-Content-Length is missing"),
                "413": _error("X-Content-Length is over the upload limit (`maxUploadBytes` in GET /)"),
                **(refused or {}),
            }
        ),
        tags=["blossom"],
        description="No body is sent or answered; the reason for a refusal is in X-Reason.",
        parameters=[
            _token_parameter(verb, note=" Its `x` tags must name X-SHA-256."),
            _sha256_header(required=True, description=f"the sha256 of the {thing} to upload"),
            {
                "name": "X-Content-Length",
                "in": "header",
                "required": True,
                "description": f"the {thing}'s size in bytes",
                "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"},
            },
            {
                "name": "X-Content-Type",
                "in": "header",
                "required": False,
                "description": content_type,
                "schema": {"type": "string"},
            },
        ],
    )


def _blossom_upload_paths() -> Json:
    descriptor = {
        "200": _ok("the blob was already on this server: its descriptor (now also the caller's)", "Blob"),
        "201": _ok("stored: the blob is new to this server", "Blob"),
    }
    upload = _operation(
        "blossomUpload",
        "Upload a blob (BUD-02)",
        {
            **descriptor,
            **_token_errors(
                "malformed X-SHA-256; empty, short, overlong or interrupted body", TOKEN_NAMES_NO_BLOB
            ),
            "402": _payment_required(QUOTA),
            "403": _error("the token's `x` tags do not name the body's sha256; or " + BLOCKED),
            "408": _error("the body arrived too slowly"),
            "409": _error("the body's sha256 is not the X-SHA-256 sent: nothing was stored"),
            "413": _error(
                "larger than the upload limit (`maxUploadBytes` in GET /), before or during the read"
            ),
            "415": _error("the body has a Content-Encoding: send the raw blob"),
            "501": _error("a Transfer-Encoding other than chunked"),
        },
        tags=["blossom"],
        description=(
            "The body is the blob, stored exactly as received; its Content-Type is ignored and the type is "
            "identified from the bytes."
        ),
        parameters=[
            _token_parameter("upload", note=UPLOAD_TOKEN),
            PROOF_PARAMETER,
            CASHU_PARAMETER,
            _sha256_header(
                required=False, description="the body's sha256, checked before it is stored (409)"
            ),
            {
                "name": "Content-Encoding",
                "in": "header",
                "required": False,
                "description": "only `identity` is accepted (415 otherwise): limits apply to bytes stored",
                "schema": {"type": "string"},
            },
        ],
        request_body={
            "required": True,
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        },
    )
    check = _pre_check(
        "blossomUploadCheck",
        "Would this upload be accepted now? (BUD-06)",
        verb="upload",
        thing="blob",
        content_type=(
            "the blob's MIME type: accepted and not checked (the stored type is read from the bytes)"
        ),
    )
    mirror = _operation(
        "blossomMirror",
        "Store a blob fetched from its URL (BUD-04)",
        {
            **descriptor,
            **_token_errors(
                "the body is not JSON with a `url`; the URL is refused (not http(s), not a valid URL, a "
                "host that is not a public address, more redirects than allowed); the origin's body is empty",
                TOKEN_REFUSED + "; or it has no `x` tag",
            ),
            "402": _payment_required(QUOTA + "; refused before the origin is contacted when nothing fits"),
            "403": _error(BLOCKED),
            "408": _error("the JSON body arrived too slowly"),
            "409": _error("the fetched blob's sha256 is not one the token's `x` tags name: nothing was kept"),
            "413": _error("the JSON body is over 64 KiB, or the blob is larger than the upload limit"),
            "415": _error("the JSON body has a Content-Encoding"),
            "502": _error(
                "the origin could not be fetched (no answer, no name, bad TLS, not a 2xx, a body cut short, "
                "too slow or encoded)"
            ),
        },
        tags=["blossom"],
        description=(
            "Only URLs whose host is a public address are fetched (each redirect checked too); the blob is "
            "kept only if the token's `x` tags name its sha256."
        ),
        parameters=[
            _token_parameter("upload", note=" Its `x` tags must name the blob to be fetched."),
            PROOF_PARAMETER,
            CASHU_PARAMETER,
        ],
        request_body={"required": True, "content": _json(_schema("MirrorRequest"))},
    )
    report = _operation(
        "blossomReport",
        "Report blobs to the operator (BUD-09)",
        {
            "200": _ok("the report is kept for the operator", "ReportReceived"),
            "400": _bad_request(
                "not a signed kind 1984 event (NIP-56) naming at least one blob with an `x` tag (a `p` or "
                "`x` tag that is not 64 hex), not UTF-8, or created in the future"
            ),
            "404": _error("no blob the report names is stored (or blocked) on this server: nothing kept"),
            "408": _error("the report arrived too slowly"),
            "413": _error("the report is over 64 KiB"),
            "415": _error("the report has a Content-Encoding"),
            "429": _retry(RATE_LIMITED),
            "500": _error(INTERNAL),
            "503": _retry(BUSY + "; or the server keeps no more open reports until the operator reads some"),
        },
        tags=["blossom"],
        description="No Authorization: the report is signed by its author. `p` tags name accounts.",
        request_body={"required": True, "content": _json(_schema("NostrEvent"))},
    )
    media = _operation(
        "blossomMedia",
        "Upload an image, stored cleaned (BUD-05)",
        {
            **descriptor,
            **_token_errors(
                "malformed X-SHA-256; empty, short, overlong or interrupted body", TOKEN_NAMES_NO_BLOB
            ),
            "402": _payment_required(QUOTA),
            "403": _error("the token's `x` tags do not name the body's sha256; or " + BLOCKED),
            "408": _error("the body arrived too slowly"),
            "409": _error("the body's sha256 is not the X-SHA-256 sent: nothing was stored"),
            "413": _error("larger than the upload limit (`maxUploadBytes` in GET /)"),
            "415": _error("not a JPEG, PNG, WebP or GIF image (PUT /upload stores it as it is); or encoded"),
            "422": _error("an image over the pixel or frame limits, corrupt, or too slow to process"),
            "501": _error("a Transfer-Encoding other than chunked"),
        },
        tags=["blossom"],
        description=(
            "The image is stored without its metadata (EXIF, GPS, XMP, comments), upright, scaled down to "
            "IMAGE_MAX_EDGE and encoded again; the descriptor names the new blob (`nip94` `ox` is the "
            "sha256 of what was sent). The token's `x` tags name what is sent."
        ),
        parameters=[
            _token_parameter("media", note=UPLOAD_TOKEN),
            PROOF_PARAMETER,
            CASHU_PARAMETER,
            _sha256_header(required=False, description="the body's sha256, checked before it is processed"),
        ],
        request_body={
            "required": True,
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        },
    )
    media_check = _pre_check(
        "blossomMediaCheck",
        "Would this image be accepted by PUT /media now? (BUD-05)",
        verb="media",
        thing="image",
        content_type="the image's MIME type: image/jpeg, image/png, image/webp or image/gif",
        refused={"415": _error("X-Content-Type is not an image type /media processes")},
    )
    return {
        "/upload": {"put": upload, "head": check},
        "/media": {"put": media, "head": media_check},
        "/mirror": {"put": mirror},
        "/report": {"put": report},
    }


def _blossom_blob_paths() -> Json:
    listing = _operation(
        "blossomList",
        "The blobs of a pubkey, newest first (BUD-02, BUD-12)",
        {
            "200": _response(
                "one page of the pubkey's blobs",
                _json({"type": "array", "items": _schema("Blob"), "maxItems": 10000}),
            ),
            **_token_errors(
                "a malformed pubkey or cursor, a cursor that is not one of this pubkey's blobs, or a "
                "`limit`, `since` or `until` out of range"
            ),
            "403": _error("the token's pubkey is not the one in the path: a list is its owner's alone"),
        },
        tags=["blossom"],
        parameters=[
            {
                "name": "pubkey",
                "in": "path",
                "required": True,
                "description": "the owner's public key, 64 lowercase hex: the token's signer",
                "schema": {"type": "string", "pattern": HEX64},
            },
            {
                "name": "cursor",
                "in": "query",
                "required": False,
                "description": "the sha256 of the last blob of the previous page",
                "schema": {"type": "string", "pattern": HEX64},
            },
            {
                "name": "limit",
                "in": "query",
                "required": False,
                "description": "at most this many blobs (10000 when absent)",
                "schema": {"type": "integer", "minimum": 1, "maximum": 10000},
            },
            {
                "name": "since",
                "in": "query",
                "required": False,
                "description": "only blobs uploaded at or after this Unix time",
                "schema": {"type": "integer", "minimum": 0, "maximum": 253402300799},
            },
            {
                "name": "until",
                "in": "query",
                "required": False,
                "description": "only blobs uploaded at or before this Unix time",
                "schema": {"type": "integer", "minimum": 0, "maximum": 253402300799},
            },
            _token_parameter("list", note=" Signed by the pubkey in the path."),
        ],
    )
    delete = _operation(
        "blossomDelete",
        "Delete your ownership of a blob (BUD-12)",
        {
            "200": _ok("your ownership removed; the blob goes with its last owner", "Deleted"),
            **_token_errors("malformed hash in the path", TOKEN_REFUSED + "; or no `x` tag names the blob"),
            "404": _error("you do not own this blob, or the path is not a blob's"),
        },
        tags=["blossom"],
        parameters=[BLOB_NAME_PARAMETER, _token_parameter("delete", note=" An `x` tag must name the blob.")],
    )
    return {"/list/{pubkey}": {"get": listing}, "/{name}": {"delete": delete}}


NIP98_REFUSED = (
    "no `Authorization: Nostr` event, or one that fails a rule (not base64 of a JSON event, wrong kind, "
    "stale, `u` not this request's exact URL, wrong `method`, a `payload` that is not a sha256, bad id or "
    "signature), or one already used; the reason names the rule"
)


def _nip98_parameter(note: str = "") -> Json:
    return {
        "name": "Authorization",
        "in": "header",
        "required": True,
        "description": (
            "`Nostr <base64>`: a signed NIP-98 event (kind 27235) with `u`, this request's exact URL (the "
            "server's public URL plus path and query), and `method`; `created_at` within the server's "
            "window (60 s unless configured). Single use." + note
        ),
        "schema": NOSTR_AUTHORIZATION,
    }


def _nip96_errors(bad_request: str) -> dict[str, Json]:
    """The errors of every NIP-96 operation, in NIP-96's shape (the reason also in `message`)."""
    return {
        "400": _bad_request(bad_request, nip96=True),
        "401": _unauthorized(NIP98_REFUSED, nip96=True),
        "429": _retry(RATE_LIMITED, nip96=True),
        "500": _error(INTERNAL, nip96=True),
        "503": _retry(BUSY, nip96=True),
    }


def _nip96_paths(serve: Json) -> Json:
    info = _operation(
        "nip96Info",
        "This server's NIP-96 description",
        {"200": _ok("the description", "Nip96Info"), "500": _error(INTERNAL)},
        tags=["nip96"],
    )
    form_field: Json = {"type": "string", "maxLength": 4096}
    upload = _operation(
        "nip96Upload",
        "Upload a file (NIP-96)",
        {
            "200": _ok("the file was already on this server (now also the caller's)", "Nip96Uploaded"),
            "201": _ok("stored: the file is new to this server", "Nip96Uploaded"),
            **_nip96_errors(
                "not multipart/form-data, or a malformed one (no or a bad boundary, a part's head "
                "broken); no `file` field (or not within the first 17), a field over 4096 bytes or not "
                "UTF-8, a nested form; an empty or interrupted file"
            ),
            "402": _error(QUOTA, nip96=True),
            "403": _error("the `payload` tag names another sha256; or " + BLOCKED, nip96=True),
            "408": _error("the body arrived too slowly", nip96=True),
            "413": _error(
                "the file (or the `size` field) is larger than the upload limit (`max_byte_size`)", nip96=True
            ),
            "415": _error("the file part has a Content-Encoding: send the raw file", nip96=True),
        },
        tags=["nip96"],
        description=(
            "Form fields before `file` are read (`caption` becomes the NIP-94 event's content, `size` is "
            "checked against the limit); others are accepted and ignored. The file is stored exactly as "
            "received, its type identified from the bytes."
        ),
        parameters=[_nip98_parameter(" `payload`, if present, is the file's sha256 (hex or base64).")],
        request_body={
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {
                            "caption": form_field,
                            "size": {**form_field, "description": "the file's size in bytes"},
                            "alt": form_field,
                            "expiration": form_field,
                            "media_type": form_field,
                            "content_type": form_field,
                            "no_transform": form_field,
                            "file": {"type": "string", "format": "binary"},
                        },
                    }
                }
            },
        },
    )
    listing = _operation(
        "nip96List",
        "Your files, newest first (NIP-96)",
        {
            "200": _ok("one page of the signer's files", "Nip96List"),
            **_nip96_errors("`page` or `count` not a whole number, or too large"),
        },
        tags=["nip96"],
        parameters=[
            {
                "name": "page",
                "in": "query",
                "required": False,
                "description": "the page, from 0",
                "schema": {"type": "integer", "minimum": 0, "maximum": 10**8},
            },
            {
                "name": "count",
                "in": "query",
                "required": False,
                "description": "files per page: 50 when absent, 1 to 500 (outside that, the nearest)",
                "schema": {"type": "integer", "minimum": 0, "maximum": 10**6},
            },
            _nip98_parameter(),
        ],
    )
    delete = _operation(
        "nip96Delete",
        "Delete your ownership of a file (NIP-96)",
        {
            "200": _ok("your ownership removed; the blob goes with its last owner", "Nip96Deleted"),
            **_nip96_errors("malformed hash in the path"),
            "404": _error("you do not own this file, or the path is not a file's", nip96=True),
        },
        tags=["nip96"],
        parameters=[BLOB_NAME_PARAMETER, _nip98_parameter()],
    )
    download = {
        **serve,
        "operationId": "nip96Download",
        "summary": "A stored file, by its hash (NIP-96 download URL)",
        "tags": ["nip96"],
        "description": "The same as GET /{name}.",
    }
    return {
        "/.well-known/nostr/nip96.json": {"get": info, "head": _head(info)},
        "/n96": {"post": upload, "get": listing},
        "/n96/{name}": {"get": download, "head": _head(download), "delete": delete},
    }


# --- components ----------------------------------------------------------------------------------------


def _object(properties: Json, *, required: list[str] | None = None, **extra: Any) -> Json:
    return {
        "type": "object",
        "required": list(properties) if required is None else required,
        "properties": properties,
        "additionalProperties": False,
        **extra,
    }


def _hex(length: int) -> Json:
    return {"type": "string", "pattern": f"^[0-9a-f]{{{length}}}$"}


NULLABLE_NUMBER: Json = {"type": ["number", "null"]}
TAGS: Json = {"type": "array", "items": {"type": "array", "items": {"type": "string"}, "minItems": 1}}
NIP94_TAGS: Json = {
    "description": "NIP-94 (kind 1063) tags: url, m, x, ox, size, name, i, magnet; dim, blurhash of images",
    "type": "array",
    "items": {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 2},
}
FILE_PROPERTIES: Json = {
    "created": {"type": "integer", "description": "Unix time you first uploaded these bytes"},
    "sha256": _hex(64),
    "name": {"type": "string", "description": "your `name` tag, or `<sha256>.<ext>`"},
    "url": {"type": "string", "format": "uri", "description": "the public URL"},
    "infohash": _hex(40),
    "magnet": {"type": "string", "pattern": "^magnet:\\?xt=urn:btih:[0-9a-f]{40}"},
    "size": {"type": "integer", "minimum": 1},
    "type": {"type": "string", "description": "the MIME type the server identified"},
    "label": {"type": ["string", "null"]},
}


def _schemas() -> Json:
    event = _object(
        {
            "id": _hex(64),
            "pubkey": _hex(64),
            "created_at": {"type": "integer"},
            "kind": {"type": "integer"},
            "tags": TAGS,
            "content": {"type": "string"},
            "sig": _hex(128),
        }
    )
    return {
        "Error": {
            "type": "object",
            "description": (
                "Every error body. `status` is `error`, or `ERROR` on the LNURL callback (LUD-06); the "
                "reason, a sentence for people, is also in the X-Reason header, and in `message` on the "
                "NIP-96 routes."
            ),
            "required": ["status", "reason"],
            "properties": {"status": {"enum": ["error", "ERROR"]}, "reason": {"type": "string"}},
        },
        "ServiceInfo": _object(
            {
                "name": {"const": "satellite"},
                "api": {"const": "Satellite CDN v1"},
                "pubkey": _hex(64),
                "npub": {"type": "string", "pattern": "^npub1[02-9ac-hj-np-z]+$"},
                "cdn": {"type": "string", "format": "uri", "description": "base of public URLs"},
                "maxUploadBytes": {"type": "integer", "minimum": 1},
                "media": {"type": "boolean", "description": "PUT /media (BUD-05) cleans images"},
            }
        ),
        "Health": _object({"status": {"const": "ok"}}),
        "TaskState": _object(
            {
                "running": {"type": "boolean"},
                "failures": {"type": "integer", "minimum": 0, "description": "in a row"},
                "restarts": {"type": "integer", "minimum": 0},
                "last_error": {"type": ["string", "null"]},
                "last_failure_at": {"type": ["number", "null"], "description": "Unix time"},
            }
        ),
        "ReadinessParts": {
            "type": "object",
            "required": ["database", "storage", "tasks"],
            "properties": {
                "database": {"type": "string", "description": "`ok` or `failing: ...`"},
                "storage": {"type": "string", "description": "`ok` or `failing: ...`"},
                "tasks": {"type": "object", "additionalProperties": _schema("TaskState")},
            },
        },
        "Readiness": {
            "allOf": [_schema("ReadinessParts")],
            "type": "object",
            "required": ["status"],
            "properties": {
                "status": {"const": "ready"},
                "database": {"const": "ok"},
                "storage": {"const": "ok"},
            },
            "unevaluatedProperties": False,
        },
        "File": _object(FILE_PROPERTIES),
        "UploadedFile": _object(
            {
                **FILE_PROPERTIES,
                "nip94": NIP94_TAGS,
            }
        ),
        "Deleted": _object({"deleted": {"const": True}, "sha256": _hex(64)}),
        "Account": _object(
            {
                "storageTotal": {"type": "integer", "minimum": 0, "description": "bytes stored"},
                "creditTotal": {"type": "number", "minimum": 0, "description": "GB-months bought"},
                "usageTotal": {"type": "number", "minimum": 0, "description": "GB-months used"},
                "paidThrough": {"type": ["integer", "null"], "description": "Unix time the credit runs out"},
                "timeRemaining": {"type": ["integer", "null"], "minimum": 0, "description": "seconds"},
                "rateFiat": _object({"usd": {"type": "number"}}),
                "exchangeFiat": _object({"usd": NULLABLE_NUMBER}),
                "files": {"type": "array", "items": _schema("File")},
                "transactions": {"type": "array", "items": _schema("Transaction")},
            }
        ),
        "NostrEvent": event,
        "Blob": _object(
            {
                "url": {"type": "string", "format": "uri", "description": "the blob on this server"},
                "sha256": _hex(64),
                "size": {"type": "integer", "minimum": 1},
                "type": {"type": "string", "description": "the MIME type the server identified"},
                "uploaded": {"type": "integer", "description": "Unix time the owner first uploaded it"},
                "nip94": NIP94_TAGS,
                "magnet": FILE_PROPERTIES["magnet"],
                "infohash": _hex(40),
            },
            description="A Blob Descriptor (BUD-02), with `nip94` (BUD-08), `magnet` and `infohash`.",
        ),
        "MirrorRequest": {
            "type": "object",
            "required": ["url"],
            "properties": {"url": {"type": "string", "format": "uri", "description": "the blob's URL"}},
        },
        "ReportReceived": _object(
            {
                "received": {"const": True},
                "targets": {"type": "integer", "minimum": 1, "description": "blobs and accounts named"},
                "new": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "of them, not reported by you before",
                },
            }
        ),
        "Nip96Plan": _object(
            {
                "name": {"type": "string"},
                "is_nip98_required": {"const": True},
                "url": {"type": "string", "format": "uri"},
                "max_byte_size": {"type": "integer", "minimum": 1},
                "file_expiration": {
                    "type": "array",
                    "items": {"const": 0},
                    "minItems": 2,
                    "maxItems": 2,
                    "description": "[0, 0]: files do not expire",
                },
                "price": _object(
                    {
                        "usd_per_gb_month": {"type": "number"},
                        "sats_per_gb_month": {
                            "type": "integer",
                            "description": "when an exchange rate is known",
                        },
                    },
                    required=["usd_per_gb_month"],
                ),
            },
            required=["name", "is_nip98_required", "max_byte_size", "file_expiration"],
        ),
        "Nip96Info": _object(
            {
                "api_url": {"type": "string", "format": "uri"},
                "download_url": {"type": "string", "format": "uri"},
                "supported_nips": {"type": "array", "items": {"type": "integer"}},
                "content_types": {"type": "array", "items": {"type": "string"}},
                "plans": _object(
                    {"free": _schema("Nip96Plan"), "paid": _schema("Nip96Plan")},
                    required=["paid"],
                    description="`free` when the operator gives free storage",
                ),
            }
        ),
        "Nip96Event": _object({"tags": NIP94_TAGS, "content": {"type": "string"}}),
        "Nip96Uploaded": _object(
            {
                "status": {"const": "success"},
                "message": {"type": "string"},
                "nip94_event": _schema("Nip96Event"),
            }
        ),
        "Nip96List": _object(
            {
                "count": {"type": "integer", "minimum": 1, "maximum": 500, "description": "files per page"},
                "total": {"type": "integer", "minimum": 0},
                "page": {"type": "integer", "minimum": 0},
                "files": {
                    "type": "array",
                    "items": _object(
                        {
                            "tags": NIP94_TAGS,
                            "content": {"type": "string"},
                            "created_at": {"type": "integer", "description": "Unix time of the upload"},
                        }
                    ),
                },
            }
        ),
        "Nip96Deleted": _object({"status": {"const": "success"}, "message": {"type": "string"}}),
        "Transaction": {
            "oneOf": [
                _object(
                    {
                        "type": {"const": "purchase"},
                        "order": _schema("NostrEvent"),
                        "payment": _schema("NostrEvent"),
                        "receipt": _schema("NostrEvent"),
                    }
                ),
                _object(
                    {
                        "type": {"enum": ["credit", "refund"]},
                        "gbMonths": {"type": "number", "description": "negative for a refund"},
                        "reason": {"type": "string", "description": "the operator's, as written"},
                        "created_at": {"type": "integer"},
                    }
                ),
            ]
        },
        "UnsignedPayment": _object(
            {
                "kind": {"const": 9734},
                "pubkey": _hex(64),
                "created_at": {"type": "integer"},
                "content": {"type": "string"},
                "tags": TAGS,
            }
        ),
        "CreditOffer": _object(
            {
                "callback": {"type": "string", "format": "uri"},
                "amount": {"type": "integer", "minimum": 1000, "multipleOf": 1000, "description": "msat"},
                "rateFiat": _object({"usd": {"type": "number"}}),
                "offer": {"allOf": [_schema("NostrEvent")], "properties": {"kind": {"const": 9733}}},
                "payment": _schema("UnsignedPayment"),
            }
        ),
        "LnurlInvoice": _object({"pr": {"type": "string"}, "routes": {"type": "array", "maxItems": 0}}),
        "LnurlPayRequest": _object(
            {
                "tag": {"const": "payRequest"},
                "callback": {"type": "string", "format": "uri"},
                "minSendable": {"type": "integer"},
                "maxSendable": {"type": "integer"},
                "metadata": {"type": "string", "description": "LUD-06 metadata, JSON in a string"},
                "allowsNostr": {"const": True},
                "nostrPubkey": _hex(64),
            }
        ),
        "DevPayRequest": _object(
            {
                "bolt11": {"type": "string"},
                "amount_msat": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
            },
            required=["bolt11"],
        ),
        "DevPaid": _object(
            {
                "paid": {"const": True},
                "payment_hash": _hex(64),
                "amount_msat": {"type": "integer"},
                "preimage": _hex(64),
            }
        ),
    }


def _headers() -> Json:
    def string(description: str, *, required: bool = True, **schema: Any) -> Json:
        return {"description": description, "required": required, "schema": {"type": "string", **schema}}

    return {
        "X-Request-Id": string(
            "the request's id (yours, if you sent a valid X-Request-Id), on every response",
            pattern="^[A-Za-z0-9._-]{1,64}$",
        ),
        "X-Reason": string(
            "the error's reason: ASCII (others become `?`), at most 300 characters", maxLength=300
        ),
        "Retry-After": {
            "description": "seconds to wait before retrying",
            "required": True,
            "schema": {"type": "integer", "minimum": 0},
        },
        "WWW-Authenticate": string("the scheme to authorize with", const="Nostr"),
        "Access-Control-Allow-Origin": string("CORS: any origin", const="*"),
        "Access-Control-Expose-Headers": string("CORS: the headers scripts may read"),
    }


def document(base_url: str) -> dict[str, Any]:
    paths: Json = {**_service_paths()}
    for prefix in API_PREFIXES:
        paths.update(_api_paths(prefix))
    paths.update(_billing_paths())
    paths.update(_blossom_upload_paths())
    blobs = _blob_paths()
    for path, operations in (*blobs.items(), *_blossom_blob_paths().items()):
        paths.setdefault(path, {}).update(operations)
    paths.update(_nip96_paths(blobs["/{name}"]["get"]))
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "satellite",
            "version": "1",
            "summary": "Satellite CDN v1: a Nostr media CDN, with the Blossom API and NIP-96",
            "description": (
                "Satellite v1 writes are authorised by a signed Nostr event in `auth`; Blossom routes by a "
                "kind 24242 token, NIP-96 routes by a NIP-98 event, each in `Authorization: Nostr`. Prose: "
                "cdn.md."
            ),
        },
        "servers": [{"url": base_url}],
        "tags": [
            {"name": "service"},
            {"name": "files"},
            {"name": "account"},
            {"name": "billing"},
            {"name": "blossom"},
            {"name": "nip96"},
        ],
        "paths": paths,
        "components": {
            "schemas": _schemas(),
            "headers": _headers(),
            "securitySchemes": {
                "metricsToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "the operator's metrics token, when one is configured",
                }
            },
        },
    }


async def serve_openapi(request: web.Request) -> web.Response:
    return web.json_response(document(request.app[DEPS].links.base_url))
