"""`satellite serve` as an operator runs it: embedded PostgreSQL, local disk, settings from the env."""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request

import bolt11
import pytest
from fake_nodes import sign_invoice
from nostr_helpers import auth_params, blossom_header
from PIL import Image
from processes import free_port, server_env, start, wait_ready

from satellite.nostr.keys import SecretKey


def test_serve_on_embedded_defaults_with_port_and_data_dir(tmp_path):
    port = free_port()
    data_dir = tmp_path / "satellite-data"
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "PUBLIC_URL", "SERVICE_KEY"}}
    env.update(
        {"PORT": str(port), "DATA_DIR": str(data_dir), "LOG_FORMAT": "json", "FREE_STORAGE_BYTES": "100000"}
    )
    base = f"http://127.0.0.1:{port}"
    proc = start(env)
    try:
        wait_ready(base, proc)
        info = json.load(urllib.request.urlopen(base + "/"))
        key_file = data_dir / "service.key"
        assert key_file.stat().st_mode & 0o777 == 0o600
        assert (data_dir / "postgres").is_dir()
        body = random.Random(3).randbytes(10_000)  # fixed: libmagic must see no signature in it
        query = urllib.parse.urlencode(auth_params(SecretKey.generate(), "Authorize Upload"))
        request = urllib.request.Request(f"{base}/item?{query}", data=body, method="PUT")
        uploaded = json.load(urllib.request.urlopen(request))
        assert uploaded["url"] == f"{base}/{hashlib.sha256(body).hexdigest()}.bin"
        # A long label makes a request line of about 9 KB: the server's own limits must apply.
        label = "\u65e5" * 1000
        query = urllib.parse.urlencode(
            auth_params(SecretKey.generate(), "Authorize Upload", [["label", label]])
        )
        request = urllib.request.Request(f"{base}/item?{query}", data=b"labelled", method="PUT")
        assert json.load(urllib.request.urlopen(request))["label"] == label
        assert urllib.request.urlopen(uploaded["url"]).read() == body
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()
    lines = [json.loads(line) for line in err.decode().splitlines() if line.startswith("{")]
    assert any(line.get("event") == "request" and line.get("path") == "/item" for line in lines)
    assert not any(line.get("level") in ("warning", "error") for line in lines), err.decode()[-3000:]

    # A restart keeps the service key and the stored file.
    proc = start(env)
    try:
        wait_ready(base, proc)
        assert json.load(urllib.request.urlopen(base + "/"))["pubkey"] == info["pubkey"]
        assert urllib.request.urlopen(uploaded["url"]).read() == body
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)


@pytest.mark.parametrize(
    ("command", "variable", "value"),
    [
        ("serve", "PORT", "not-a-port"),
        ("migrate", "SERVICE_KEY", "nsec1notakey"),
        ("serve", "LOG_LEVEL", "loud"),
        ("serve", "RELAYS", " , "),
    ],
)
def test_an_invalid_setting_stops_start_up_naming_it(tmp_path, command, variable, value):
    env = {**os.environ, variable: value, "DATA_DIR": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "satellite", command], env=env, capture_output=True, timeout=60
    )
    assert proc.returncode != 0
    assert f"invalid setting: {variable}".encode() in proc.stderr
    assert not (tmp_path / "postgres").exists()  # nothing was started


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"LIGHTNING_BACKEND": "lnbits"}, "LNBITS_URL"),
        ({"LIGHTNING_BACKEND": "lnd", "LND_REST_URL": "http://127.0.0.1:9"}, "LND_MACAROON"),
        (
            {"PRICE_SATS_PER_GB_MONTH": "0", "EXCHANGE_RATE_PROVIDERS": "nosuchexchange"},
            "EXCHANGE_RATE_PROVIDERS",
        ),
        ({"ENVIRONMENT": "production"}, "LIGHTNING_BACKEND=dev"),
        ({"STORAGE_BACKEND": "s3"}, "S3_BUCKET"),
        (
            {
                "STORAGE_BACKEND": "s3",
                "S3_BUCKET": "media",
                "S3_ENDPOINT_URL": "http://127.0.0.1:9",
                "S3_ACCESS_KEY_ID": "x",
                "S3_SECRET_ACCESS_KEY": "y",
                "S3_MAX_ATTEMPTS": "1",
            },
            "http://127.0.0.1:9",
        ),
    ],
)
def test_a_setting_that_cannot_work_stops_start_up_naming_it(tmp_path, changes, named):
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update({"DATA_DIR": str(tmp_path), "PORT": str(free_port()), **changes})
    proc = subprocess.run(
        [sys.executable, "-m", "satellite", "serve"], env=env, capture_output=True, timeout=60
    )
    assert proc.returncode != 0
    said = [line for line in proc.stderr.decode().splitlines() if line.startswith("satellite: ")]
    assert said and named in said[-1], proc.stderr.decode()[-2000:]
    assert not (tmp_path / "postgres").exists()  # refused before anything was created


def get_json(url: str, params: dict[str, str]) -> dict:
    with urllib.request.urlopen(f"{url}?{urllib.parse.urlencode(params)}") as resp:
        return json.load(resp)


def buy(base: str, user: SecretKey, gb_months: int) -> tuple[dict, dict]:
    """An offer, and the LNURL callback's answer (the invoice) for it, as a web client gets them."""
    offer = get_json(
        base + "/account/credit", auth_params(user, "Request Storage", [["gb_months", str(gb_months)]])
    )
    template = offer["payment"]
    payment = user.sign_event(
        kind=template["kind"],
        content=template["content"],
        tags=template["tags"],
        created_at=template["created_at"],
    )
    invoice = get_json(
        offer["callback"], {"amount": str(offer["amount"]), "nostr": json.dumps(payment.to_dict())}
    )
    return offer, invoice


def test_dev_pay_with_the_servers_environment_credits_the_account(tmp_path):
    """The dev node on `make run` defaults: buy storage, pay with `satellite dev-pay`, upload."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "PUBLIC_URL", "SERVICE_KEY"}}
    env.update({"PORT": str(port), "DATA_DIR": str(tmp_path / "d"), "SETTLEMENT_POLL_SECONDS": "0.5"})
    base = f"http://127.0.0.1:{port}"
    user = SecretKey.generate()
    proc = start(env)
    try:
        wait_ready(base, proc)
        offer, invoice = buy(base, user, 1)
        paid = subprocess.run(
            [sys.executable, "-m", "satellite", "dev-pay", invoice["pr"]],
            env=env,
            capture_output=True,
            timeout=60,
        )
        assert paid.returncode == 0, paid.stderr.decode()
        assert f"paid {offer['amount']} msat".encode() in paid.stdout
        preimage = paid.stdout.decode().split("preimage ")[1].split()[0]
        assert (
            hashlib.sha256(bytes.fromhex(preimage)).hexdigest() == bolt11.decode(invoice["pr"]).payment_hash
        )
        again = subprocess.run(
            [sys.executable, "-m", "satellite", "dev-pay", invoice["pr"]],
            env=env,
            capture_output=True,
            timeout=60,
        )
        assert again.returncode != 0 and b"already paid" in again.stderr
        as_json = subprocess.run(
            [sys.executable, "-m", "satellite", "dev-pay", "--json", invoice["pr"]],
            env=env,
            capture_output=True,
            timeout=60,
        )
        assert as_json.returncode != 0 and b"already paid" in as_json.stderr
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            account = get_json(base + "/account", auth_params(user, "Authenticate User"))
            if account["creditTotal"]:
                break
            time.sleep(0.2)
        assert account["creditTotal"] == 1
        assert len(account["transactions"]) == 1
        query = urllib.parse.urlencode(auth_params(user, "Authorize Upload"))
        request = urllib.request.Request(f"{base}/item?{query}", data=b"paid for", method="PUT")
        assert json.load(urllib.request.urlopen(request))["size"] == 8
        # The JSON form, for scripts: what a wallet shows once it has paid.
        offer, invoice = buy(base, user, 2)
        paid = subprocess.run(
            [sys.executable, "-m", "satellite", "dev-pay", "--json", invoice["pr"]],
            env=env,
            capture_output=True,
            timeout=60,
        )
        assert paid.returncode == 0, paid.stderr.decode()
        receipt = json.loads(paid.stdout)
        assert receipt["amount_msat"] == offer["amount"]
        assert receipt["payment_hash"] == bolt11.decode(invoice["pr"]).payment_hash
        assert hashlib.sha256(bytes.fromhex(receipt["preimage"])).hexdigest() == receipt["payment_hash"]
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()


def test_several_workers_share_the_port_and_stop_cleanly(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "PUBLIC_URL", "SERVICE_KEY"}}
    env.update(
        {
            "PORT": str(port),
            "DATA_DIR": str(tmp_path / "d"),
            "WORKERS": "2",
            "LOG_FORMAT": "json",
            "FREE_STORAGE_BYTES": "1000000",
        }
    )
    base = f"http://127.0.0.1:{port}"
    proc = start(env)
    try:
        wait_ready(base, proc)
        bodies = [random.Random(i).randbytes(5000) for i in range(20)]
        urls = []
        for body in bodies:
            query = urllib.parse.urlencode(auth_params(SecretKey.generate(), "Authorize Upload"))
            request = urllib.request.Request(f"{base}/item?{query}", data=body, method="PUT")
            urls.append(json.load(urllib.request.urlopen(request))["url"])
        for url, body in zip(urls, bodies, strict=True):
            assert urllib.request.urlopen(url).read() == body
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()[-2000:]
    lines = [json.loads(line) for line in err.decode().splitlines() if line.startswith("{")]
    started = next(line for line in lines if line.get("event") == "workers started")
    assert len(started["pids"]) == 2
    assert sum(line.get("event") == "ready" for line in lines) == 2  # each worker started its app
    assert not any(p.name == "postmaster.pid" for p in (tmp_path / "d" / "postgres").iterdir())


def read_log_until(proc: subprocess.Popen, event: str, timeout: float = 60) -> list[dict]:
    """JSON log lines from the server's stderr, up to and including the first with this event."""
    lines: list[dict] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        raw = proc.stderr.readline()
        if not raw:
            raise AssertionError(f"the server ended before logging {event!r}: {lines[-5:]}")
        if raw.startswith(b"{"):
            lines.append(json.loads(raw))
            if lines[-1].get("event") == event:
                return lines
    raise AssertionError(f"no {event!r} in the log")


@pytest.mark.parametrize("workers", ["1", "2"])
def test_any_number_of_sigterms_give_one_clean_shutdown(tmp_path, workers):
    port = free_port()
    env = server_env(PORT=str(port), DATA_DIR=str(tmp_path / "d"), WORKERS=workers, LOG_FORMAT="json")
    proc = start(env)
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc)
        for _ in range(3):
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.01)  # the signals arrive 10 ms apart, as from an impatient process manager
    finally:
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()[-3000:]
    events = [json.loads(line).get("event") for line in err.decode().splitlines() if line.startswith("{")]
    assert "stopping" in events and "already stopping" in events
    assert not any(p.name == "postmaster.pid" for p in (tmp_path / "d" / "postgres").iterdir())


def test_a_sigterm_while_workers_start_is_a_clean_shutdown(tmp_path):
    env = server_env(PORT=str(free_port()), DATA_DIR=str(tmp_path / "d"), WORKERS="2", LOG_FORMAT="json")
    proc = start(env)
    try:
        read_log_until(proc, "workers started")
        proc.send_signal(signal.SIGTERM)  # the workers are still starting
    finally:
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()[-3000:]


def test_dev_pay_against_a_directory_without_a_database_creates_nothing(tmp_path):
    env = server_env(DATA_DIR=str(tmp_path / "nothing-here"))
    proc = subprocess.run(
        [sys.executable, "-m", "satellite", "dev-pay", "lnbcrt1anything"],
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert b"Traceback" not in proc.stderr
    assert f"DATA_DIR={tmp_path / 'nothing-here'}".encode() in proc.stderr
    assert not (tmp_path / "nothing-here").exists()


def test_dev_pay_against_another_servers_database_says_where_it_looked(database_url, db, tmp_path):
    """A migrated database, but not the one that issued the invoice."""
    env = server_env(DATABASE_URL=database_url, DATA_DIR=str(tmp_path))
    invoice = sign_invoice(
        amount_msat=50_000, description_hash=bytes(32), payment_hash="ab" * 32, expiry=600
    )  # a real invoice, from another node
    proc = subprocess.run(
        [sys.executable, "-m", "satellite", "dev-pay", invoice], env=env, capture_output=True, timeout=60
    )
    assert proc.returncode != 0
    assert b"Traceback" not in proc.stderr
    said = proc.stderr.decode()
    assert "not issued by this server's dev node" in said and "DATABASE_URL" in said


def test_images_are_cleaned_and_described_by_every_worker_of_satellite_serve(tmp_path):
    """The image workers start from a fork server inside each HTTP worker of `satellite serve`, as in
    production: PUT /media strips an image's metadata, and a plain upload of an image gets dim and
    blurhash, whichever worker takes the request; the server then stops cleanly."""
    port = free_port()
    env = server_env(
        PORT=str(port),
        DATA_DIR=str(tmp_path / "d"),
        WORKERS="2",
        LOG_FORMAT="json",
        FREE_STORAGE_BYTES="100000000",
    )
    base = f"http://127.0.0.1:{port}"
    proc = start(env)
    try:
        wait_ready(base, proc)
        for i in range(6):  # spread over both workers
            key = SecretKey.generate()
            picture = io.BytesIO()
            exif = Image.Exif()
            exif[0x010F] = "SecretCam"
            Image.new("RGB", (120 + i, 80), (200, 10 * i, 30)).save(picture, "JPEG", exif=exif.tobytes())
            body = picture.getvalue()
            digest = hashlib.sha256(body).hexdigest()
            path = "/media" if i % 2 == 0 else "/upload"
            headers = {**blossom_header(key, path.strip("/"), x=[digest]), "X-SHA-256": digest}
            request = urllib.request.Request(f"{base}{path}", data=body, method="PUT", headers=headers)
            with urllib.request.urlopen(request) as response:
                descriptor = json.load(response)
            assert ["dim", f"{120 + i}x80"] in descriptor["nip94"]
            stored = urllib.request.urlopen(descriptor["url"]).read()
            assert (b"SecretCam" in stored) == (
                path == "/upload"
            )  # /media strips it; /upload keeps the bytes
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert b'"level": "error"' not in err and b"Traceback" not in err, err.decode()[-2000:]
