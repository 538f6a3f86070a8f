"""`satellite serve` as an operator runs it: embedded PostgreSQL, local disk, settings from the env."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from nostr_helpers import auth_params

from satellite.nostr.keys import SecretKey


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}: {proc.stderr.read().decode()}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("server did not become ready")


def start(env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "satellite", "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


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
        assert urllib.request.urlopen(uploaded["url"]).read() == body
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()
    lines = [json.loads(line) for line in err.decode().splitlines() if line.startswith("{")]
    assert any(line.get("event") == "request" and line.get("path") == "/item" for line in lines)

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
