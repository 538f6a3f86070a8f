"""What operators type and what they read: amounts, pubkeys, times, tables and progress."""

from __future__ import annotations

import asyncio
import io
import os
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from operator_helpers import settings_env

from satellite.billing.grants import InvalidGrant, parse_gb_months
from satellite.billing.metering import BYTE_SECONDS_PER_GB_MONTH
from satellite.cli.args import when
from satellite.cli.output import Progress, table
from satellite.nostr.keys import InvalidKey, SecretKey, npub_encode, parse_pubkey

NOW = datetime(2026, 12, 2, 3, 4, 5, tzinfo=UTC)


@given(st.decimals(min_value=-(10**9), max_value=10**9, places=6, allow_nan=False, allow_infinity=False))
def test_gb_months_with_up_to_six_decimals_are_exact_byte_seconds(amount):
    if amount == 0:
        with pytest.raises(InvalidGrant):
            parse_gb_months(str(amount))
        return
    assert parse_gb_months(str(amount)) == amount * BYTE_SECONDS_PER_GB_MONTH
    assert Decimal(parse_gb_months(f" {amount} ")) == amount * BYTE_SECONDS_PER_GB_MONTH


@given(st.decimals(min_value=-5, max_value=5, places=9, allow_nan=False, allow_infinity=False))
def test_more_decimals_than_a_byte_second_are_refused_not_rounded(amount):
    if amount == amount.quantize(Decimal("0.000001")):
        return
    with pytest.raises(InvalidGrant):
        parse_gb_months(str(amount))


@pytest.mark.parametrize("text", ["", "x", "nan", "-inf", "Infinity", "0", "-0.000", "1e13", "1,5"])
def test_what_is_not_an_amount_is_refused(text):
    with pytest.raises(InvalidGrant):
        parse_gb_months(text)


@given(st.binary(min_size=32, max_size=32))
def test_a_pubkey_is_read_from_npub_or_hex_in_either_case(raw):
    hex_key = raw.hex()
    assert parse_pubkey(npub_encode(hex_key)) == hex_key
    assert parse_pubkey(npub_encode(hex_key).upper()) == hex_key
    assert parse_pubkey(hex_key.upper()) == hex_key
    with pytest.raises(InvalidKey):
        parse_pubkey(hex_key[:-1])
    with pytest.raises(InvalidKey):
        parse_pubkey(npub_encode(hex_key)[:-1] + ("q" if npub_encode(hex_key)[-1] != "q" else "p"))


def test_an_nsec_is_not_a_pubkey():
    with pytest.raises(InvalidKey):
        parse_pubkey(SecretKey.generate().nsec)


@given(st.integers(min_value=0, max_value=999_999), st.sampled_from(["h", "d", "w"]))
def test_spans_count_back_from_now(n, unit):
    step = {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}[unit]
    if n * step >= NOW - datetime.min.replace(tzinfo=UTC):
        with pytest.raises(ValueError, match="before the year 1"):
            when(f"{n}{unit}", NOW)
    else:
        assert when(f"{n}{unit}", NOW) == NOW - n * step


def test_dates_and_times_without_an_offset_are_utc():
    assert when("2026-11-01", NOW) == datetime(2026, 11, 1, tzinfo=UTC)
    assert when("2026-11-01T12:30", NOW) == datetime(2026, 11, 1, 12, 30, tzinfo=UTC)
    assert when("2026-11-01T12:30+02:00", NOW) == datetime(2026, 11, 1, 10, 30, tzinfo=UTC)
    for bad in ("yesterday", "30 d", "-3d", "2026-13-01", ""):
        with pytest.raises(ValueError):
            when(bad, NOW)


def test_tables_align_their_columns():
    shown = table(["name", "n"], [["a", 1], ["longer", 22], [None, True]], right=(1,))
    assert shown.splitlines() == ["name      n", "------  ---", "a         1", "longer   22", "-       yes"]


def test_progress_is_written_only_to_a_terminal():
    quiet = io.StringIO()
    progress = Progress(quiet, "checking", 3)
    for done in range(1, 4):
        progress(done)
    progress.finish()
    assert quiet.getvalue() == ""

    leader, follower = os.openpty()
    with os.fdopen(follower, "w") as terminal:
        progress = Progress(terminal, "checking", 3)
        progress(1)
        progress(3)
        progress.finish()
    shown = os.read(leader, 1000).decode()
    os.close(leader)
    assert "checking: 1/3" in shown and "checking: 3/3" in shown


async def test_a_command_shows_progress_on_a_terminal_and_never_on_a_pipe(settings, db):
    env = settings_env(settings)
    piped = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "satellite",
        "gc",
        "--dry-run",
        "--json",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _out, err = await piped.communicate()
    assert piped.returncode == 0 and "collecting:" not in err.decode()
    leader, follower = os.openpty()
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "satellite",
            "gc",
            "--dry-run",
            "--json",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=follower,
        )
        os.close(follower)
        out_on_tty, _ = await proc.communicate()
        shown = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the terminal closed with the process
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(leader)
    assert proc.returncode == 0 and b"collecting: spools" in shown
    assert out_on_tty.decode().startswith("{")  # stdout keeps only the result


@pytest.mark.parametrize(
    "command",
    [
        "report",
        "expire",
        "reconcile",
        "credit",
        "block",
        "unblock",
        "blocks",
        "reports",
        "gc",
        "gc-orphans",
        "stats",
    ],
)
async def test_every_command_has_help_and_a_script(command):
    from pathlib import Path

    script = Path(__file__).parent.parent / "scripts" / f"{command.replace('-', '_')}.py"
    assert script.is_file()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(script), "--help", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    assert f"usage: satellite {command}" in out.decode() and "--json" in out.decode()
