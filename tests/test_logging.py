"""One access line per request, with what an operator needs, and never the signed event."""

from __future__ import annotations

import json

import structlog
from nostr_helpers import auth_event

from satellite.log import configure_logging


async def test_access_lines_are_json_and_never_carry_the_auth_event(client, user, capsys):
    configure_logging(json_logs=True)
    try:
        event = auth_event(user, "Authorize Upload", [["name", "a.txt"]])
        resp = await client.put("/item", params={"auth": json.dumps(event)}, data=b"hello")
        assert resp.status == 200
        missing = await client.get("/" + "0" * 64)
        assert missing.status == 404
        out = capsys.readouterr()
        text = out.out + out.err
        lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        access = [line for line in lines if line.get("event") == "request"]
        assert len(access) == 2
        put, get = access
        assert put["method"] == "PUT" and put["path"] == "/item" and put["status"] == 200
        assert put["bytes_in"] == 5 and put["bytes_out"] > 0
        assert put["request_id"] == resp.headers["X-Request-Id"]
        assert isinstance(put["duration_ms"], float | int)
        assert get["status"] == 404 and get["reason"] == "not found"
        assert event["sig"] not in text and event["id"] not in text
    finally:
        structlog.reset_defaults()


async def test_a_sane_client_request_id_is_kept(client):
    resp = await client.get("/health", headers={"X-Request-Id": "abc-123"})
    assert resp.headers["X-Request-Id"] == "abc-123"
    resp = await client.get("/health", headers={"X-Request-Id": "bad id\twith junk"})
    assert resp.headers["X-Request-Id"] != "bad id\twith junk"


def test_a_repeated_warning_is_written_once_per_interval_with_a_count(capsys):
    from satellite import log as satellite_log

    now = [1000.0]
    repeats = satellite_log.Repeats(interval=60, clock=lambda: now[0])
    saved, satellite_log._repeats = satellite_log._repeats, repeats
    configure_logging(json_logs=True)
    try:
        logger = structlog.get_logger("satellite.test")
        for _ in range(500):
            logger.warning("connection refused", kind="over cap")
        logger.warning("another kind", kind="other")
        logger.info("request")  # info lines are never held back
        logger.info("request")
        now[0] += 61
        logger.warning("connection refused", kind="over cap")
        lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    finally:
        satellite_log._repeats = saved
        structlog.reset_defaults()
    refused = [line for line in lines if line["event"] == "connection refused"]
    assert len(refused) == 2
    assert "repeated" not in refused[0] and refused[1]["repeated"] == 499
    assert [line["event"] for line in lines].count("another kind") == 1
    assert [line["event"] for line in lines].count("request") == 2
