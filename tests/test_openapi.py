"""/openapi.json describes the running server: every route is in it, and schemathesis, driving a real
`satellite serve` from it, finds no 5xx and no response that breaks the document (status, content type,
body, headers).

Random `auth` values only ever meet the 403 of the first auth check, so a share of the generated cases
gets a freshly signed auth event with the operation's action (and the tags that operation reads), and a
share of the blob requests names a file stored before the run: the 200/206/304/416 answers, uploads,
accounts and offers are then checked against the document too.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import signal
import subprocess
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from nostr_helpers import auth_event, auth_params
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
# Operations that need state no generated request has (an offer signed for, an invoice issued): their
# success is tested elsewhere (test_billing_flow), here only their refusals.
NO_SUCCESS_EXPECTED = {("get", "/lnurl/callback"), ("post", "/dev/pay")}
# What each authenticated operation signs: its action, and the tags it reads (filled in per case).
ACTIONS = {"put": "Authorize Upload", "delete": "Delete Item"}
ROUTE_ACTIONS = {"/account": "Authenticate User", "/account/credit": "Request Storage"}
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


def _signed(case, key: SecretKey, base_url: str) -> str | None:
    """A valid auth event for the case's operation, or None if the operation takes no auth."""
    route = case.operation.path.removeprefix("/v1/media")
    method = case.operation.method.lower()
    content = ACTIONS.get(method) if route == "/item" else ROUTE_ACTIONS.get(route)
    if content is None:
        return None
    tags: list[list[str]] = []
    if method == "delete":  # a file this key owns (200) or one nobody owns (404)
        data = case.query["auth"].encode() or b"-"
        if len(data) % 4 == 0:
            _upload(base_url, key, data)
        tags.append(["sha256", hashlib.sha256(data).hexdigest()])
    elif route == "/account/credit":
        tags.append(["gb_months", "1"])
    elif method == "put" and isinstance(case.body, bytes | bytearray):
        tags.append(["size", str(len(case.body))])
    return json.dumps(auth_event(key, content, tags))


def _aimed(case, stored: str, base_url: str) -> None:
    """Every other case (chosen from its own data, so runs repeat) made to get past the first checks: a
    signed auth event, or the stored file's hash in the path."""
    if case.query and "auth" in case.query and len(case.query["auth"]) % 2 == 0:
        signed = _signed(case, SecretKey.generate(), base_url)
        if signed is not None:
            case.query["auth"] = signed
    params = case.path_parameters or {}
    if case.operation.path in ("/{name}", "/{sha256}.torrent"):
        key = "name" if "name" in params else "sha256"
        if re.match("^[0-9a-f]{64}", params[key]) and int(params[key][:2], 16) % 2 == 0:
            params[key] = stored + params[key][64:]
            if case.headers is None:
                case.headers = {}
            pick = sum(map(ord, params[key]))
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
