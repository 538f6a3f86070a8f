"""/openapi.json describes the running server: every route is in it, and schemathesis, driving a real
`satellite serve` from it, finds no 5xx and no response that breaks the document (status, content type,
body, headers).

Random `auth` values and Authorization headers only ever meet the first auth check (403, 401), so a
share of the generated cases gets freshly signed auth: a v1 event with the operation's action, a Blossom
token with its verb and the blob it names, or a NIP-98 event for the exact URL and method (with the tags
each operation reads); deletes and lists get a file of the signer's stored first, reports a signed
report, and a share of the blob requests names a file stored before the run. The 200/201/206/304/416
answers, uploads, deletes, lists, accounts and offers are then checked against the document too.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import signal
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from nostr_helpers import auth_event, auth_params, blossom_header, nip98_header
from processes import free_port, server_env, start, wait_ready
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from satellite.api import openapi
from satellite.app import create_app
from satellite.config import Settings
from satellite.nostr.keys import SecretKey

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
MAX_EXAMPLES = 20
# Operations that need state no generated request has (an offer signed for, an invoice issued, a blob
# on a public origin): here only their refusals. The billing routes succeed in test_billing_flow; a
# mirror's only origin here would be this machine, which the server refuses without
# MIRROR_ALLOW_LOOPBACK (its fetch is tested in test_origin_fetch).
NO_SUCCESS_EXPECTED = {("get", "/lnurl/callback"), ("post", "/dev/pay"), ("put", "/mirror")}
# What each authenticated operation signs: its action, and the tags it reads (filled in per case).
ACTIONS = {"put": "Authorize Upload", "delete": "Delete Item"}
ROUTE_ACTIONS = {"/account": "Authenticate User", "/account/credit": "Request Storage"}
# The verb of the Blossom token each operation takes (the blob it names is filled in per case).
TOKEN_VERBS = {
    ("put", "/upload"): "upload",
    ("head", "/upload"): "upload",
    ("put", "/mirror"): "upload",
    ("put", "/media"): "media",
    ("head", "/media"): "media",
    ("delete", "/{name}"): "delete",
    ("get", "/list/{pubkey}"): "list",
    ("get", "/account"): "account",
    ("get", "/account/credit"): "credit",
}
NIP98_OPERATIONS = {("post", "/n96"), ("get", "/n96"), ("delete", "/n96/{name}")}
BLOB_PATHS = ("/{name}", "/{sha256}.torrent", "/n96/{name}")
# Mirror URLs of a file that exists, on addresses the server does not fetch from (this machine, a
# private network, link-local), and one it cannot parse.
REFUSED_ORIGINS = (
    "{base}/{sha256}",
    "http://localhost:1/{sha256}",
    "http://10.0.0.1/{sha256}",
    "http://[::1]/{sha256}",
    "http://169.254.169.254/latest/meta-data/",
    "http://[/{sha256}",
)
# A small PNG, for PUT /media to clean: fixed, so the run repeats.
IMAGE = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000040000000308020000003b963991000000144944415478"
    "9c63e43a21c700034c0c4800850300233800f6f825f9ab0000000049454e44ae426082"
)
# A stored file's bytes: fixed, so that libmagic sees no signature and the run is repeatable.
STORED = random.Random(7).randbytes(3000)
# Ranges for requests that name the stored file: one, several, none that overlaps it (416), malformed.
RANGES = ("bytes=0-99", "bytes=-10", "bytes=0-9,20-29", "bytes=5000-", "bytes=x")


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[str]:
    port = free_port()
    env = server_env(
        PORT=str(port),
        DATA_DIR=str(tmp_path_factory.mktemp("openapi") / "data"),
        FREE_STORAGE_BYTES="100000000",
        LOG_FORMAT="json",
        LOG_LEVEL="warning",
        # Hundreds of requests from one address, most with refused auth: the rate limits would answer
        # everything 429 after the first few (their answers are tested in test_rate_limits).
        AUTH_FAILURES_PER_IP="off",
        CREDIT_REQUESTS_PER_IP="off",
        CREDIT_REQUESTS_PER_PUBKEY="off",
        UPLOADS_PER_IP="off",
        UPLOADS_PER_PUBKEY="off",
    )
    base = f"http://127.0.0.1:{port}"
    proc = start(env, stdout=subprocess.DEVNULL)
    errors: list[str] = []
    # Drained all along: a full pipe would stall the server mid-run.
    drain = threading.Thread(target=lambda: errors.extend(line.decode() for line in proc.stderr), daemon=True)
    try:
        wait_ready(base, proc)
        drain.start()
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        if drain.ident is not None:
            drain.join(timeout=10)
        proc.stderr.close()
    logged = [json.loads(line) for line in errors if line.startswith("{")]
    assert not [line for line in logged if line.get("level") == "error"], "".join(errors)[-3000:]


def _upload(base_url: str, key: SecretKey, data: bytes) -> str:
    query = urllib.parse.urlencode(auth_params(key, "Authorize Upload"))
    request = urllib.request.Request(f"{base_url}/item?{query}", data=data, method="PUT")
    with urllib.request.urlopen(request) as response:
        return json.load(response)["sha256"]


@pytest.fixture(scope="module")
def stored(server) -> str:
    """The sha256 of a file stored on the server before the run."""
    return _upload(server, SecretKey.generate(), STORED)


@pytest.fixture(scope="module")
def api_schema(server):
    return schemathesis.openapi.from_url(f"{server}/openapi.json")


# The operations, from the document as the code builds it (the test loads the served one).
OPERATIONS = [
    (method, path)
    for path, operations in openapi.document("http://localhost")["paths"].items()
    for method in operations
]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _bytes(body: object) -> bytes | None:
    """A generated binary body's bytes (schemathesis wraps them)."""
    data = getattr(body, "data", body)
    return bytes(data) if isinstance(data, bytes | bytearray) else None


def _owned(case, key: SecretKey, base_url: str) -> None:
    """Point the case's `name` at a file `key` owns: bytes from the case's own name, stored first."""
    name = case.path_parameters["name"]
    data = name.encode()
    _upload(base_url, key, data)
    case.path_parameters["name"] = _sha256(data) + name[64:]


def _signed(case, key: SecretKey, base_url: str) -> str | None:
    """A valid auth event for the case's operation, or None if the operation takes no auth."""
    route = case.operation.path.removeprefix("/v1/media")
    method = case.operation.method.lower()
    content = ACTIONS.get(method) if route == "/item" else ROUTE_ACTIONS.get(route)
    if content is None:
        return None
    tags: list[list[str]] = []
    body = _bytes(case.body)
    if method == "delete":  # a file this key owns (200) or one nobody owns (404)
        data = case.query["auth"].encode() or b"-"
        if len(data) % 4 == 0:
            _upload(base_url, key, data)
        tags.append(["sha256", _sha256(data)])
    elif route == "/account/credit":
        tags.append(["gb_months", "1"])
    elif method == "put" and body is not None:
        tags.append(["size", str(len(body))])
    return json.dumps(auth_event(key, content, tags))


def _token(case, key: SecretKey, base_url: str, stored: str) -> dict[str, str] | None:
    """A valid Blossom token for the case's operation, with the `x` tag it needs (the X-SHA-256 sent,
    else the body's hash, or the path's), or None if the operation takes none. Most uploads then announce
    the body's real hash and no Content-Encoding, most pre-checks a size within the limit and the
    credit, most deletes and lists name a file the signer owns; the rest meet the refusals."""
    route = case.operation.path.removeprefix("/v1/media")
    method = case.operation.method.lower()
    verb = TOKEN_VERBS.get((method, route))
    if verb is None:
        return None
    headers = case.headers
    pick = sum(map(ord, headers["Authorization"]))
    x: list[str] = []
    extra: list[list[str]] = []
    if route == "/media" and method == "put" and pick % 2 == 0:
        case.body = IMAGE  # an image it processes: the others meet the 415
    if route == "/media" and method == "head" and pick % 2 == 0:
        headers["X-Content-Type"] = "image/png"
    if route in ("/upload", "/media"):
        body = _bytes(case.body) or b""
        if method == "put" and "X-SHA-256" in headers and pick % 3 != 0:
            headers["X-SHA-256"] = _sha256(body)
        if method == "put" and pick % 4 != 0:
            headers.pop("Content-Encoding", None)
        length = headers.get("X-Content-Length", "")
        if method == "head" and length.isdigit() and pick % 3 != 0:
            headers["X-Content-Length"] = str(int(length) % 5000)
        x.append(headers.get("X-SHA-256", "").lower() or _sha256(body))
    elif route == "/mirror":
        x.append(stored)
        url = case.body.get("url") if isinstance(case.body, dict) else None
        if isinstance(url, str) and (url.lower().startswith(("http:", "https:")) or pick % 3 == 0):
            # Never a fetch over the network: an address the server refuses to fetch from.
            case.body["url"] = REFUSED_ORIGINS[pick % len(REFUSED_ORIGINS)].format(
                base=base_url, sha256=stored
            )
    elif route == "/{name}":
        if pick % 3 != 0:
            _owned(case, key, base_url)
        x.append(case.path_parameters["name"][:64])
    elif route == "/list/{pubkey}":
        case.path_parameters["pubkey"] = key.pubkey
        if pick % 3 != 0:  # one file on the list, which the cursor names (an empty page) or not
            sha256 = _upload(base_url, key, headers["Authorization"].encode())
            query = case.query if case.query is not None else {}
            for name in ("since", "until"):
                query.pop(name, None)
            if "cursor" in query:
                query["cursor"] = sha256
            case.query = query
    elif route == "/account/credit":
        extra.append(["gb_months", "1"])
    return blossom_header(key, verb, x=x, extra=extra)


def _nip98(case, key: SecretKey, base_url: str) -> dict[str, str] | None:
    """A NIP-98 event for the exact URL the server sees (its public URL, the test server's address, plus
    path and query) and the case's method, or None for other operations. Most deletes and half the lists
    get a file of the signer's stored first, a third of the uploads the file's hash as `payload`."""
    method = case.operation.method.lower()
    if (method, case.operation.path) not in NIP98_OPERATIONS:
        return None
    pick = sum(map(ord, case.headers["Authorization"]))
    payload = None
    if method == "delete" and pick % 3 != 0:
        _owned(case, key, base_url)
    elif method == "get" and pick % 2 == 0:
        _upload(base_url, key, case.headers["Authorization"].encode())
    elif method == "post" and isinstance(case.body, dict) and pick % 3 == 0:
        data = _bytes(case.body.get("file"))
        if data is not None:
            payload = _sha256(data)
    sent = case.as_transport_kwargs(base_url=base_url)
    url = requests.Request("GET", sent["url"], params=sent.get("params")).prepare().url
    assert url is not None
    return nip98_header(key, url, method.upper(), payload=payload)


def _report(key: SecretKey, stored: str) -> dict:
    """A signed NIP-56 report naming the stored file and the key's own account."""
    tags = [["x", stored, "spam"], ["p", key.pubkey]]
    return key.sign_event(kind=1984, content="", tags=tags, created_at=int(time.time())).to_dict()


def _aimed(case, stored: str, base_url: str) -> None:
    """A share of the cases (chosen from their own data, so runs repeat: half the `auth` values, two in
    three Authorization headers, half the reports, half the blob names) made to get past the first
    checks: a signed auth event or Authorization header, a signed report, or the stored file's hash in
    the path."""
    key = SecretKey.generate()
    if case.query and "auth" in case.query:  # v1 auth (which the server reads before a token)
        if len(case.query["auth"]) % 2 == 0:
            signed = _signed(case, key, base_url)
            if signed is not None:
                case.query["auth"] = signed
    elif case.headers and len(case.headers.get("Authorization", "")) % 3 != 0:
        aimed = _token(case, key, base_url, stored) or _nip98(case, key, base_url)
        if aimed is not None:
            case.headers.update(aimed)
    if case.operation.path == "/report" and isinstance(case.body, dict) and len(str(case.body)) % 2 == 0:
        case.body = _report(key, stored)
    params = case.path_parameters or {}
    if case.operation.path in BLOB_PATHS and case.operation.method.lower() in ("get", "head"):
        key_name = "name" if "name" in params else "sha256"
        if re.match("^[0-9a-f]{64}", params[key_name]) and int(params[key_name][:2], 16) % 2 == 0:
            params[key_name] = stored + params[key_name][64:]
            if case.headers is None:
                case.headers = {}
            pick = sum(map(ord, params[key_name]))
            if pick % 4 == 0:
                case.headers["If-None-Match"] = f'"{stored}"'
            elif pick % 4 != 1:
                case.headers["Range"] = RANGES[pick // 4 % len(RANGES)]
    elif case.operation.path == "/.well-known/lnurlp/{name}" and len(params["name"]) % 2 == 0:
        params["name"] = "storage"


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m.upper()} {p}" for m, p in OPERATIONS])
def test_the_server_conforms_to_its_openapi_document(server, api_schema, stored, method, path):
    operation = api_schema[path][method.upper()]
    statuses: set[int] = set()

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy())
    def run(case):
        _aimed(case, stored, server)
        statuses.add(case.call_and_validate(checks=CHECKS).status_code)

    run()
    # The aimed cases reached the operation's success, so its body and headers were checked too.
    if (method, path) not in NO_SUCCESS_EXPECTED:
        assert any(status < 400 for status in statuses), statuses


def test_the_document_is_openapi_3_1_and_names_every_route(server):
    with urllib.request.urlopen(f"{server}/openapi.json") as response:
        assert response.headers["Content-Type"].startswith("application/json")
        document = json.load(response)
    assert document["openapi"] == "3.1.0"
    assert document["servers"] == [{"url": server}]
    documented = {(path, method.upper()) for path, ops in document["paths"].items() for method in ops}
    app = create_app(Settings())  # only built: nothing starts before the app runs
    routes = {
        (route.resource.canonical, route.method)
        for route in app.router.routes()
        if route.resource is not None and route.method != "*"
    }
    assert routes, "the app has no routes"
    assert routes - documented == set()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                assert "X-Request-Id" in response["headers"], (method, path, status)
                if int(status) >= 400 and method != "head":
                    body = response["content"]["application/json"]["schema"]
                    assert {"$ref": "#/components/schemas/Error"} in body["allOf"], (method, path, status)
                    assert "X-Reason" in response["headers"], (method, path, status)
