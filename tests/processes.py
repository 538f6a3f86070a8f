"""`satellite serve` as a separate process, as an operator runs it: start, wait until ready, stop."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request

# Settings the test session itself may carry, which a server under test must not inherit.
_NOT_INHERITED = ("DATABASE_URL", "PUBLIC_URL", "SERVICE_KEY")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(**settings: str) -> dict[str, str]:
    """This process's environment without the settings a test passes explicitly, plus `settings`."""
    env = {k: v for k, v in os.environ.items() if k not in _NOT_INHERITED and not k.startswith("AWS_")}
    env.update(settings)
    return env


def start(env: dict[str, str], *, stdout: int | None = subprocess.PIPE) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "satellite", "serve"], env=env, stdout=stdout, stderr=subprocess.PIPE
    )


def wait_ready(base: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(
                f"server exited with {proc.returncode}: {proc.stderr.read().decode()[-3000:]}"
            )
        try:
            with urllib.request.urlopen(base + "/health", timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("server did not become ready")
