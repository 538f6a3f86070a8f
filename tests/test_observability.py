"""What an operator sees of a running server: /healthz, /readyz through a database outage, Prometheus
/metrics (in one process and summed over WORKERS), and a request id on every log line of a request."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request

import structlog
from billing_helpers import dev_pay, invoice_for, wait_for
from nostr_helpers import auth_params
from processes import free_port, server_env
from prometheus_client.parser import text_string_to_metric_families

from satellite.log import configure_logging
from satellite.nostr.keys import SecretKey


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def _value(samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def _metrics(client, **headers: str) -> dict:
    resp = await client.get("/metrics", headers=headers)
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"].startswith("text/plain")
    return _samples(await resp.text())


async def test_metrics_count_what_clients_did(make_client, settings):
    client = await make_client(
        settings.model_copy(
            update={
                "free_storage_bytes": 10**9,
                "uploads_per_pubkey": "3/minute",
                "metrics_sample_seconds": 0.05,
            }
        )
    )
    before = await _metrics(client)
    key = SecretKey.generate()
    sizes = [1000, 300_000]
    for n, size in enumerate(sizes):
        params = auth_params(key, "Authorize Upload", [["name", f"{n}.bin"]])
        assert (await client.put("/item", params=params, data=os.urandom(size))).status == 200
    forged = auth_params(key, "Authenticate User")
    forged["auth"] = forged["auth"].replace('"sig": "', '"sig": "00')
    assert (await client.get("/account", params=forged)).status == 403
    params = auth_params(key, "Authorize Upload", [["name", "x.bin"]])
    assert (await client.put("/item", params=params, data=b"third")).status == 200
    params = auth_params(key, "Authorize Upload", [["name", "y.bin"]])
    assert (await client.put("/item", params=params, data=b"fourth")).status == 429
    after = await _metrics(client)

    def grew(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert grew("satellite_http_requests_total", route="/item", method="PUT", status="200") == 3
    assert grew("satellite_http_requests_total", route="/item", method="PUT", status="429") == 1
    assert grew("satellite_upload_bytes_count") == 3
    assert grew("satellite_upload_bytes_sum") == sum(sizes) + len(b"third")
    assert (
        grew("satellite_auth_failures_total", reason="malformed auth event")
        + grew("satellite_auth_failures_total", reason="event id does not match its content")
        + grew("satellite_auth_failures_total", reason="event signature is invalid")
        == 1
    )
    assert grew("satellite_rate_limited_total", limit="upload:pubkey") == 1
    assert _value(after, "satellite_stored_bytes") == sum(sizes) + len(b"third")
    assert _value(after, "satellite_stored_blobs") == 3
    assert _value(after, "satellite_db_pool_connections", state="max") == settings.database_pool_size
    assert _value(after, "satellite_open_connections") >= 1


async def test_invoices_created_and_settled_with_their_lag(make_client, settings):
    client = await make_client(settings.model_copy(update={"free_storage_bytes": 0}))
    _, _, pr = await invoice_for(client, SecretKey.generate(), 1)
    assert (await dev_pay(client, pr)).status == 200

    async def settled():
        samples = await _metrics(client)
        return (
            samples if _value(samples, "satellite_invoices_settled_total", outcome="credited") == 1 else None
        )

    samples = await wait_for(settled)
    assert _value(samples, "satellite_invoices_created_total") == 1
    assert _value(samples, "satellite_settlement_lag_seconds_count") == 1
    assert 0 <= _value(samples, "satellite_settlement_lag_seconds_sum") < 60


async def test_metrics_behind_a_token(make_client, settings):
    client = await make_client(settings.model_copy(update={"metrics_token": "s3cret-token"}))
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-token"}):
        resp = await client.get("/metrics", headers=headers)
        assert resp.status == 401
        assert resp.headers["X-Reason"] == (await resp.json())["reason"]
        assert "satellite_" not in await resp.text()
    await _metrics(client, Authorization="Bearer s3cret-token")


async def test_healthz_answers_without_the_database(make_client, settings):
    client = await make_client(settings)
    resp = await client.get("/healthz")
    assert resp.status == 200 and (await resp.json())["status"] == "ok"


class TcpProxy:
    """A TCP relay to PostgreSQL that the test can take down (every connection cut, new ones refused)
    and bring back, as a database restart looks to the server."""

    def __init__(self, target_host: str, target_port: int, socket_dir: str | None) -> None:
        self.target = (target_host, target_port)
        self.socket_path = f"{socket_dir}/.s.PGSQL.{target_port}" if socket_dir else None
        self.port = free_port()
        self.server: asyncio.Server | None = None
        self.links: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()
        for writer in list(self.links):
            writer.transport.abort()
        self.links.clear()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if self.socket_path:
                up_reader, up_writer = await asyncio.open_unix_connection(self.socket_path)
            else:
                up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self.links |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self.links -= {writer, up_writer}


async def test_readiness_follows_the_database_down_and_back(make_client, settings, database_url):
    from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

    parts = urlsplit(database_url)
    query = parse_qs(parts.query)
    socket_dir = query.pop("host", [None])[0]  # an embedded server listens on a unix socket
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432, socket_dir)
    await proxy.start()
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{proxy.port}"
    proxied = urlunsplit(
        parts._replace(
            netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host, query=urlencode(query, doseq=True)
        )
    )
    client = await make_client(settings.model_copy(update={"database_url": proxied}))
    resp = await client.get("/readyz")
    assert resp.status == 200, await resp.text()

    await proxy.stop()
    resp = await client.get("/readyz")
    assert resp.status == 503
    body = await resp.json()
    assert body["database"].startswith("failing") and body["storage"] == "ok"
    assert "database" in resp.headers["X-Reason"]
    assert (await client.get("/healthz")).status == 200  # the process itself is fine

    await proxy.start()

    async def ready():
        return (await client.get("/readyz")).status == 200

    await wait_for(ready)
    await proxy.stop()


async def test_every_log_line_of_a_request_carries_its_id(make_client, settings, capsys):
    configure_logging(json_logs=True)
    try:
        client = await make_client(settings.model_copy(update={"free_storage_bytes": 0}))
        capsys.readouterr()
        await invoice_for(client, SecretKey.generate(), 1)
        out = capsys.readouterr()
        lines = [json.loads(line) for line in (out.out + out.err).splitlines() if line.startswith("{")]
        issued = [line for line in lines if line.get("event") == "invoice issued"]
        callbacks = [
            line for line in lines if line.get("event") == "request" and line["path"] == "/lnurl/callback"
        ]
        assert len(issued) == 1 and len(callbacks) == 1
        assert issued[0]["request_id"] == callbacks[0]["request_id"]
        request_lines = [line for line in lines if line.get("event") == "request"]
        assert all(line.get("request_id") for line in request_lines)
    finally:
        structlog.reset_defaults()


def _get(url: str, timeout: float = 5) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode()


def test_two_workers_report_one_sum_on_a_separate_metrics_address(database_url, tmp_path):
    port, metrics_port = free_port(), free_port()
    env = server_env(
        PORT=str(port),
        DATA_DIR=str(tmp_path / "data"),
        DATABASE_URL=database_url,
        WORKERS="2",
        METRICS_LISTEN=f"127.0.0.1:{metrics_port}",
        LOG_LEVEL="warning",
    )
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    proc = subprocess.Popen([sys.executable, "-m", "satellite", "serve"], env=env, stderr=subprocess.PIPE)
    base, metrics = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}/metrics"
    try:
        deadline_ok = False
        for _ in range(300):
            if proc.poll() is not None:
                raise AssertionError(proc.stderr.read().decode()[-3000:])
            with contextlib.suppress(OSError):
                if _get(metrics)[0] == 200 and _get(base + "/healthz")[0] == 200:
                    deadline_ok = True
                    break
            subprocess.run(["sleep", "0.2"], check=True)
        assert deadline_ok, "server did not start"
        start = _samples(_get(metrics)[1])
        for _ in range(40):  # a new connection each: both workers answer some
            assert _get(base + "/healthz")[0] == 200
        assert _get(base + "/metrics")[0] == 404  # not on the main address
        samples = _samples(_get(metrics)[1])
        grew = _value(
            samples, "satellite_http_requests_total", route="/healthz", method="GET", status="200"
        ) - _value(start, "satellite_http_requests_total", route="/healthz", method="GET", status="200")
        assert grew == 40
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()[-3000:]
