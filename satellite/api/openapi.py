"""GET /openapi.json: the OpenAPI 3.1 description of every route, parameter, response and error body.

Pure data and small helpers that build it; `cdn.md` is the prose version. Every response documents the
headers every response carries (`X-Request-Id`, CORS), and every error response the one error body
(`Error`, as `satellite.api.errors` writes it) with its `X-Reason` header.
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


def _error(description: str, *, lnurl: bool = False, headers: dict[str, Json] | None = None) -> Json:
    """An error response: the shared `Error` body (LUD-06's upper-case `ERROR` on LNURL routes) and the
    reason again in `X-Reason`."""
    status = {"const": "ERROR" if lnurl else "error"}
    body = {"allOf": [_schema("Error"), {"properties": {"status": status}}]}
    return _response(description, _json(body), {"X-Reason": _header("X-Reason"), **(headers or {})})


def _retry(description: str, *, lnurl: bool = False) -> Json:
    return _error(description, lnurl=lnurl, headers={"Retry-After": _header("Retry-After")})


# Errors, by the reasons an operation gives them.
def _bad_request(description: str = "malformed request", *, lnurl: bool = False) -> Json:
    return _error(description, lnurl=lnurl)


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


def _auth_parameter(action: str) -> Json:
    return {
        "name": "auth",
        "in": "query",
        "required": True,
        "description": (
            "A signed Nostr event of kind 22242 with content `" + AUTH_ACTIONS[action] + "`, serialized "
            "as JSON (then URL-encoded). Single use; `created_at` within the server's window (±600 s "
            "unless configured). See cdn.md, Authentication."
        ),
        "schema": {"type": "string", "maxLength": 65536},
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


def _head(get: Json) -> Json:
    """HEAD of a GET operation: the same statuses and headers, no body."""
    responses = {
        status: {k: v for k, v in response.items() if k != "content"}
        for status, response in get["responses"].items()
    }
    head = {**get, "operationId": get["operationId"] + "Head", "responses": responses}
    head["summary"] = get["summary"] + " (headers only)"
    return head


# --- service -------------------------------------------------------------------------------------------


def _service_paths() -> Json:
    info = _operation(
        "getServiceInfo",
        "What this server is",
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
            "402": _error(
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
    account = _operation(
        "getAccount" + suffix,
        "Your account: totals, metered usage, files, purchases",
        {"200": _ok("the signer's account", "Account"), **_auth_errors("malformed request")},
        tags=["account"],
        description=mount.format(path="/account").strip(),
        parameters=[_auth_parameter("account")],
    )
    credit = _operation(
        "requestCredit" + suffix,
        "An offer to buy storage",
        {
            "200": _ok("a signed offer and the payment event to sign", "CreditOffer"),
            **_auth_errors("missing or invalid `gb_months` tag, or more than the maximum"),
            "403": _error(AUTH_REFUSED + "; or the account is blocked on this server"),
            "503": _retry(BUSY + "; or live pricing has no exchange rate right now"),
        },
        tags=["billing"],
        description=(
            "The auth event carries a `gb_months` tag (1 to the server's maximum)."
            + mount.format(path="/account/credit")
        ),
        parameters=[_auth_parameter("credit")],
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
                "reason, a sentence for people, is also in the X-Reason header."
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
                "nip94": {
                    "description": "NIP-94 (kind 1063) tags: url, m, x, ox, size, name, i, magnet",
                    "type": "array",
                    "items": {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 2},
                },
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
        "Access-Control-Allow-Origin": string("CORS: any origin", const="*"),
        "Access-Control-Expose-Headers": string("CORS: the headers scripts may read"),
    }


def document(base_url: str) -> dict[str, Any]:
    paths: Json = {**_service_paths()}
    for prefix in API_PREFIXES:
        paths.update(_api_paths(prefix))
    paths.update(_billing_paths())
    paths.update(_blob_paths())
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "satellite",
            "version": "1",
            "summary": "Satellite CDN v1: a Nostr media CDN",
            "description": "Every write is authorised by a signed Nostr event in `auth`. Prose: cdn.md.",
        },
        "servers": [{"url": base_url}],
        "tags": [
            {"name": "service"},
            {"name": "files"},
            {"name": "account"},
            {"name": "billing"},
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
