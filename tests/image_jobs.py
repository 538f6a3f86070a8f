"""Jobs for the image worker's tests, run in its worker processes: in a module of their own, which imports
next to nothing, so that a worker loads them in no time (the time limit counts from when a job is sent)."""

from __future__ import annotations

import os
import threading


def announce_then_wait(fifo: str) -> None:
    """Write this process's id to `fifo` (the test learns the job is running, and where), then hang."""
    with open(fifo, "w") as announce:
        announce.write(str(os.getpid()))
    threading.Event().wait()


def fail_unexpectedly() -> None:
    raise RuntimeError("a bug")
