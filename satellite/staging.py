"""Spool files: uploads on their way into storage, kept in the staging dir.

The process writing a spool holds an exclusive `flock` on it for as long as the file exists, and the
kernel drops that lock when the process dies, however it dies. So a sweep can tell a live upload from
one whose process is gone without guessing from ages or process ids: start-up removes every spool no
live process holds, and a periodic sweep removes those that other processes (killed siblings, an
earlier run) left behind while this one keeps serving.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from pathlib import Path

SPOOL_PREFIX = ".upload-"


def create_spool(staging_dir: Path) -> tuple[int, Path]:
    """A new spool file, open for writing and locked by this process: (fd, path). The caller removes the
    file before closing the fd (see `remove_spool`)."""
    while True:
        fd, name = tempfile.mkstemp(prefix=SPOOL_PREFIX, dir=staging_dir)
        fcntl.flock(fd, fcntl.LOCK_EX)  # waits only while a sweep is looking at this very file
        if _still_named(fd, name):
            return fd, Path(name)
        os.close(fd)  # a sweep removed it between its creation and our lock: make another


def remove_spool(fd: int, path: Path) -> None:
    """Unlink first, then close: the file is never visible without its lock."""
    try:
        path.unlink(missing_ok=True)
    finally:
        os.close(fd)


def sweep_spools(staging_dir: Path, *, dry_run: bool = False) -> int:
    """Remove every spool in `staging_dir` that no live process holds; how many were removed (or, with
    `dry_run`, would be)."""
    removed = 0
    for entry in staging_dir.glob(SPOOL_PREFIX + "*"):
        try:
            fd = os.open(entry, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live upload
            if dry_run:
                removed += 1
            elif _still_named(fd, str(entry)):
                with contextlib.suppress(FileNotFoundError):
                    entry.unlink()
                    removed += 1
        finally:
            os.close(fd)
    return removed


def _still_named(fd: int, name: str) -> bool:
    """Whether `name` is still the file open as `fd`."""
    try:
        return os.stat(name).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False
