"""The `satellite` command: the server, and the commands operators run by hand or from cron.

Every command reads the same settings as the server (environment variables, or `.env`), prints a table
by default and JSON with --json, writes progress and logs to stderr (progress only to a terminal), and
exits 0 when all is well, 1 when it found or met something it could not do, 2 on a usage error. A
setting or a database that cannot be used stops it with one line naming it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import traceback

from pydantic import ValidationError

from satellite.cli import billing, housekeeping, moderation, report, server
from satellite.config import ConfigError, Settings

SCRIPT_COMMANDS = (
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
)


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" for e in exc.errors()
        )
        sys.exit(f"satellite: invalid setting: {problems}")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="satellite",
        description="Nostr-authenticated, Lightning-paid CDN. Settings come from environment variables.",
    )
    sub = top.add_subparsers(dest="command", required=True, metavar="command")
    for module in (server, report, billing, moderation, housekeeping):
        module.register(sub)
    for name, command in sub.choices.items():
        if name != "serve":
            command.add_argument("--json", action="store_true", help="print the result as JSON")
    return top


def main(argv: list[str] | None = None) -> None:
    a = parser().parse_args(argv)
    if a.command == "serve":
        from satellite.serve import listen_for_stop_early, serve

        listen_for_stop_early()
        serve(_settings())
        return
    settings = _settings()
    from satellite.log import configure_logging

    configure_logging(json_logs=settings.json_logs, level=settings.log_level)
    try:
        code = asyncio.run(_run(settings, a))
    except ConfigError as exc:
        sys.exit(f"satellite {a.command}: {exc}")
    except Exception as exc:  # one line for the operator (the traceback with LOG_LEVEL=debug)
        if settings.log_level == "debug":
            traceback.print_exc()
        sys.exit(f"satellite {a.command}: failed: {type(exc).__name__}: {_one_line(exc)}")
    sys.exit(code)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:500] or "(no message)"


async def _run(settings: Settings, a: argparse.Namespace) -> int:
    raw = getattr(a, "raw", None)
    if raw is not None:
        code: int = await raw(settings, a)
        return code
    from satellite.cli.context import operator

    async with operator(settings, as_json=a.json, storage=getattr(a, "storage", False)) as op:
        code = await a.run(op, a)
    return code


def script(command: str) -> None:
    """What `scripts/<command>.py` runs: the command with the script's arguments."""
    assert command in SCRIPT_COMMANDS, command
    main([command, *sys.argv[1:]])
