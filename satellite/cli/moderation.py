"""Moderation commands: block, unblock, blocks, reports."""

from __future__ import annotations

import argparse
from typing import Any

from satellite.cli import args as types
from satellite.cli.context import Operator
from satellite.cli.output import iso, size, table
from satellite.nostr.keys import npub_encode

KINDS = ("sha256", "pubkey")


def _target(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", choices=KINDS, help="what to name: content by its sha256, or an account")
    p.add_argument("value", help="the sha256 (64 hex), or the pubkey (npub or hex)")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    block = sub.add_parser(
        "block",
        help="block content (sha256) or an account (pubkey)",
        description="Blocked content is no longer served (404, or 451 with BLOCKED_CONTENT_STATUS=451),"
        " cannot be uploaded again, and leaves storage: every owner's file of it is removed. A blocked"
        " account can neither upload nor buy storage; --remove-files also removes its files.",
    )
    _target(block)
    block.add_argument("--reason", required=True, help="why (kept with the block, listed by `blocks`)")
    block.add_argument("--remove-files", action="store_true", help="pubkey: also remove the account's files")
    block.add_argument(
        "--dry-run", action="store_true", help="show what the block would remove; change nothing"
    )
    block.set_defaults(run=_block, storage=True)

    unblock = sub.add_parser(
        "unblock",
        help="lift a block",
        description="Allows again what the block refused. Nothing removed by the block comes back.",
    )
    _target(unblock)
    unblock.add_argument("--dry-run", action="store_true", help="say whether it is blocked; change nothing")
    unblock.set_defaults(run=_unblock)

    blocks = sub.add_parser("blocks", help="list blocked content and accounts with their reasons")
    blocks.add_argument("--kind", choices=KINDS, help="only this kind")
    blocks.set_defaults(run=_blocks)

    reports = sub.add_parser(
        "reports",
        help="list reports users filed about content or accounts (NIP-56 kind 1984)",
        description="Open reports, oldest first; --all includes resolved ones.",
    )
    reports.add_argument("--all", action="store_true", help="include resolved reports")
    reports.set_defaults(run=_reports)


def _value(kind: str, text: str) -> str:
    parse = types.sha256 if kind == "sha256" else types.pubkey
    try:
        return parse(text)
    except argparse.ArgumentTypeError as exc:
        raise SystemExit(f"satellite: {exc}") from None


def _named(kind: str, value: str) -> dict[str, Any]:
    named: dict[str, Any] = {"kind": kind, "value": value}
    if kind == "pubkey":
        named["npub"] = npub_encode(value)
    return named


async def _block(op: Operator, a: argparse.Namespace) -> int:
    from satellite import moderation
    from satellite.db import blocklist

    if not a.reason.strip():
        raise SystemExit("satellite block: --reason must say why")
    value = _value(a.kind, a.value)
    if a.dry_run:
        touches_files = a.kind == "sha256" or a.remove_files
        affected = await moderation.affected(op.pool, kind=a.kind, value=value) if touches_files else []
        data: dict[str, Any] = {
            **_named(a.kind, value),
            "reason": a.reason.strip(),
            "dry_run": True,
            "new": await blocklist.get(op.pool, a.kind, value) is None,
            "would_remove": [
                {"pubkey": x, "sha256": value} if a.kind == "sha256" else {"pubkey": value, "sha256": x}
                for x in affected
            ],
        }
        op.emit(data, f"would block {a.kind} {value}; would remove {len(affected)} file(s)")
        return 0
    done = await moderation.block(
        op.pool,
        op.storage,
        kind=a.kind,
        value=value,
        reason=a.reason.strip(),
        now=op.now(),
        policy=op.policy,
        remove_files=a.remove_files,
    )
    data = {
        **_named(a.kind, value),
        "reason": a.reason.strip(),
        "dry_run": False,
        "new": done.new,
        "removed": [{"pubkey": r.pubkey, "sha256": r.sha256, "size": r.size} for r in done.removed],
    }
    freed = sum(r.size for r in done.removed if r.blob_removed)
    text = (
        f"{'blocked' if done.new else 'already blocked (reason updated)'}: {a.kind} {value};"
        f" removed {len(done.removed)} file(s), {size(freed)} left storage"
    )
    if a.kind == "pubkey":
        from satellite.db import overview

        # Invoices already handed out can still be paid, and a payment is credited: the sats came in.
        open_invoices = await overview.open_invoices(op.pool, value)
        data["open_invoices"] = open_invoices
        if open_invoices:
            text += f"\n{len(open_invoices)} invoice(s) already handed out can still be paid and credited:"
            text += "".join(f"\n  {h}" for h in open_invoices)
    op.emit(data, text)
    return 0


async def _unblock(op: Operator, a: argparse.Namespace) -> int:
    from satellite import moderation
    from satellite.db import blocklist

    value = _value(a.kind, a.value)
    if a.dry_run:
        was = await blocklist.get(op.pool, a.kind, value) is not None
        op.emit(
            {**_named(a.kind, value), "dry_run": True, "blocked": was},
            f"{'would unblock' if was else 'not blocked'}: {value}",
        )
        return 0
    removed = await moderation.unblock(op.pool, kind=a.kind, value=value)
    op.emit(
        {**_named(a.kind, value), "dry_run": False, "unblocked": removed},
        f"{'unblocked' if removed else 'was not blocked'}: {a.kind} {value}",
    )
    return 0


async def _blocks(op: Operator, a: argparse.Namespace) -> int:
    from satellite.db import blocklist

    rows = await blocklist.all_blocks(op.pool, a.kind)
    data = {
        "blocks": [
            {**_named(b.kind, b.value), "reason": b.reason, "created_at": iso(b.created_at)} for b in rows
        ]
    }
    text = table(
        ["kind", "value", "since", "reason"],
        [
            [b.kind, npub_encode(b.value) if b.kind == "pubkey" else b.value, b.created_at, b.reason]
            for b in rows
        ],
    )
    op.emit(data, text)
    return 0


async def _reports(op: Operator, a: argparse.Namespace) -> int:
    from satellite.db import reports

    rows = await reports.listed(op.pool, include_resolved=a.all)
    data = {
        "reports": [
            {
                "event_id": r.event_id,
                **{"target_kind": r.target_kind, "target": r.target},
                "reporter": r.reporter,
                "reporter_npub": npub_encode(r.reporter),
                "type": r.report_type,
                "content": r.content,
                "received_at": iso(r.received_at),
                "resolved_at": iso(r.resolved_at),
                "resolution": r.resolution,
            }
            for r in rows
        ]
    }
    text = table(
        ["received", "target", "type", "reporter", "content"],
        [
            [
                r.received_at,
                f"{r.target_kind} {r.target}",
                r.report_type,
                npub_encode(r.reporter),
                r.content[:60],
            ]
            for r in rows
        ],
    )
    op.emit(data, text)
    return 0
