"""Billing commands: expire, reconcile, credit, cashu-proofs."""

from __future__ import annotations

import argparse
import getpass
import os
from datetime import timedelta
from typing import Any

from satellite.cli import args as types
from satellite.cli.context import Operator, account_fields, moment
from satellite.cli.output import gb_months, iso, size, table


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    expire = sub.add_parser(
        "expire",
        help="remove the files of accounts whose credit ran out longer ago than the grace period",
        description="Accounts whose credit ran out more than the grace period ago lose their files (as far"
        " as the free allowance does not cover them); blobs no other account owns leave storage. Every"
        " removal is logged. Running it again does nothing more.",
    )
    expire.add_argument("--grace-days", type=types.days, help="default: EXPIRE_GRACE_DAYS (7 unless set)")
    expire.add_argument(
        "--dry-run", action="store_true", help="list what would go, and its bytes; change nothing"
    )
    expire.set_defaults(run=_expire, storage=True)

    reconcile = sub.add_parser(
        "reconcile",
        help="check every invoice against the Lightning node; settle missed payments",
        description="Compares every invoice in the database (open, paid, underpaid, or expired unpaid)"
        " with the Lightning backend's view. Payments the watcher missed are settled, invoices the node has"
        " let lapse are marked expired. Exits 1 if anything is left that it cannot put right: amounts"
        " that differ, invoices the node does not know, credit for an invoice the node says is unpaid, a"
        " node that cannot be asked.",
    )
    reconcile.add_argument("--since", help="only invoices created since (a date, a time, or a span like 30d)")
    reconcile.add_argument("--dry-run", action="store_true", help="ask the node, change nothing")
    reconcile.set_defaults(run=_reconcile)

    credit = sub.add_parser(
        "credit",
        help="grant credit to an account, or refund it (a negative amount)",
        description="Grants GB-months of storage credit, or takes back unused credit when the amount is"
        " negative (never below zero remaining). The reason is required, recorded with the grant, and"
        " shown to the account holder in the account's transactions.",
    )
    credit.add_argument("pubkey", type=types.pubkey, help="npub or hex")
    credit.add_argument("gb_months", metavar="gb-months", help="e.g. 10, 0.5, or -2 for a refund")
    credit.add_argument("--reason", required=True, help="why (shown to the account holder)")
    credit.add_argument("--operator", default=None, help="who grants it (default: the login name)")
    credit.add_argument("--dry-run", action="store_true", help="check and show, change nothing")
    credit.set_defaults(run=_credit)

    cashu = sub.add_parser(
        "cashu-proofs",
        help="print the Cashu ecash the server has taken, as one token per mint",
        description="Tokens paid in X-Cashu are swapped at the mint for proofs only this server can spend;"
        " they are kept in the database until handed out here. Prints one cashuB token per mint (for any"
        " Cashu wallet to receive; a token per 100 proofs) and the amount it holds. With --mark-exported,"
        " the proofs printed are marked as handed out, in the same statement that reads them, and are not"
        " printed again: store the output.",
    )
    cashu.add_argument("--mint", help="only this mint's proofs")
    cashu.add_argument("--mark-exported", action="store_true", help="mark the proofs printed as handed out")
    cashu.set_defaults(run=_cashu_proofs)


async def _expire(op: Operator, a: argparse.Namespace) -> int:
    from satellite.billing import expiry

    grace_days = a.grace_days if a.grace_days is not None else op.settings.expire_grace_days
    grace = timedelta(days=grace_days)
    now = op.now()
    if a.dry_run:
        done = await expiry.plan(op.pool, now=now, grace=grace, policy=op.policy)
    else:
        progress = op.progress("expiring accounts")
        done = await expiry.expire(
            op.pool, op.storage, now=now, grace=grace, policy=op.policy, progress=progress
        )
        progress.finish()
    accounts: list[dict[str, Any]] = [
        {
            **account_fields(x.account.pubkey),
            "ran_out_at": x.account.ran_out_at,
            "files": len(x.removed),
            "bytes": x.bytes_removed,
            "bytes_freed": x.bytes_freed,
            "removed": [r.sha256 for r in x.removed],
        }
        for x in done
    ]
    totals = {k: sum(x[k] for x in accounts) for k in ("files", "bytes", "bytes_freed")}
    data = {
        "dry_run": a.dry_run,
        "grace_days": grace_days,
        "ran_out_before": iso(now - grace),
        "accounts": accounts,
        "totals": {"accounts": len(accounts), **totals},
    }
    verb = "would remove" if a.dry_run else "removed"
    text = table(
        ["npub", "credit ran out", "files", "bytes", "freed from storage"],
        [
            [x["npub"], x["ran_out_at"], x["files"], size(x["bytes"]), size(x["bytes_freed"])]
            for x in accounts
        ],
        right=(2, 3, 4),
    )
    leave = "would leave" if a.dry_run else "left"
    text += (
        f"\n{verb} {totals['files']} files of {len(accounts)} accounts whose credit ran out more than"
        f" {grace_days} days ago; {size(totals['bytes_freed'])} {leave} storage"
    )
    op.emit(data, text)
    return 0


async def _reconcile(op: Operator, a: argparse.Namespace) -> int:
    import aiohttp

    from satellite.billing.reconcile import FIXED, PROBLEMS, Reconciler, Verdict
    from satellite.lightning.registry import build_backend
    from satellite.nostr.keys import load_or_create_service_key

    now = op.now()
    since = moment(a.since, now)
    settings = op.settings
    key = load_or_create_service_key(settings.service_key, settings.data_dir / "service.key")
    async with aiohttp.ClientSession() as session:
        backend = build_backend(settings, session, op.pool)
        try:
            reconciler = Reconciler(
                pool=op.pool,
                backend=backend,
                service_key=key,
                policy=op.policy,
                clock=lambda: op.now().timestamp(),
                node_timeout_seconds=settings.lightning_timeout_seconds,
                dry_run=a.dry_run,
            )
            progress = op.progress("checking invoices")
            findings = await reconciler.run(since=since, progress=progress)
            progress.finish()
        finally:
            await backend.aclose()
    counts = {v.value: 0 for v in Verdict}
    for f in findings:
        counts[f.verdict.value] += 1
    listed = [f for f in findings if f.verdict is not Verdict.AGREES]
    problems = sum(1 for f in findings if f.verdict in PROBLEMS)
    data = {
        "dry_run": a.dry_run,
        "backend": settings.lightning_backend.value,
        "checked": len(findings),
        "fixed": sum(1 for f in findings if f.verdict in FIXED),
        "problems": problems,
        "verdicts": counts,
        "invoices": [
            {
                "offer": f.invoice.id,
                **account_fields(f.invoice.pubkey),
                "payment_hash": f.invoice.payment_hash,
                "status": f.invoice.status,
                "amount_msat": f.invoice.amount_msat,
                "received_msat": f.invoice.amount_received_msat,
                "node_state": f.node_state,
                "node_received_msat": f.node_received_msat,
                "verdict": f.verdict.value,
                "problem": f.verdict in PROBLEMS,
                "detail": f.detail,
            }
            for f in listed
        ],
    }
    text = table(
        ["payment hash", "was", "node", "verdict", "detail"],
        [
            [f.invoice.payment_hash[:16], f.invoice.status, f.node_state, f.verdict.value, f.detail]
            for f in listed
        ],
    )
    text += f"\nchecked {len(findings)} invoices: {data['fixed']} put right, {problems} need attention"
    op.emit(data, text)
    return 1 if problems else 0


# Proofs per printed token: a wallet receives a token in one swap, and mints cap a swap's inputs.
PROOFS_PER_TOKEN = 100


async def _cashu_proofs(op: Operator, a: argparse.Namespace) -> int:
    from satellite.cashu.token import encode_token, normalise_mint
    from satellite.db import cashu

    mint = normalise_mint(a.mint) if a.mint else None
    held = await cashu.held(op.pool, mint=mint, take=a.mark_exported, now=op.now())
    by_mint: dict[str, list[dict[str, Any]]] = {}
    payments: dict[str, int] = {}
    for h in held:
        by_mint.setdefault(h.mint, []).extend(h.proofs)
        payments[h.mint] = payments.get(h.mint, 0) + 1
    found: list[dict[str, Any]] = []
    for url, proofs in by_mint.items():
        tokens = [
            encode_token(url, "sat", proofs[i : i + PROOFS_PER_TOKEN])
            for i in range(0, len(proofs), PROOFS_PER_TOKEN)
        ]
        found.append(
            {
                "mint": url,
                "sat": sum(int(p["amount"]) for p in proofs),
                "payments": payments[url],
                "proofs": len(proofs),
                "tokens": tokens,
            }
        )
    lines = [
        f"{f['mint']}  {f['sat']} sat in {f['proofs']} proofs ({f['payments']} payments)\n"
        + "\n".join(f["tokens"])
        for f in found
    ]
    op.emit({"mints": found, "marked_exported": a.mark_exported}, "\n".join(lines) or "no Cashu proofs held")
    return 0


async def _credit(op: Operator, a: argparse.Namespace) -> int:
    from satellite.billing import grants

    try:
        byte_seconds = grants.parse_gb_months(a.gb_months)
    except grants.InvalidGrant as exc:
        raise SystemExit(f"satellite credit: {exc.reason}") from None
    if not a.reason.strip():
        raise SystemExit("satellite credit: --reason must say why")
    operator = a.operator or os.environ.get("SUDO_USER") or _login()
    now = op.now()
    result: dict[str, Any] = {
        **account_fields(a.pubkey),
        "gb_months": gb_months(byte_seconds),
        "byte_seconds": byte_seconds,
        "reason": a.reason.strip(),
        "operator": operator,
        "dry_run": a.dry_run,
    }
    try:
        granted = await grants.grant(
            op.pool,
            pubkey=a.pubkey,
            byte_seconds=byte_seconds,
            reason=a.reason,
            operator=operator,
            now=now,
            policy=op.policy,
            dry_run=a.dry_run,
        )
    except grants.RefundTooLarge as exc:
        op.err.write(f"satellite credit: {exc.reason}\n")
        if op.as_json:
            op.emit(
                {
                    **result,
                    "refused": exc.reason,
                    "remaining_gb_months": gb_months(exc.remaining_byte_seconds),
                },
                "",
            )
        return 1
    after = granted.balance
    result["grant"] = granted.grant.id if granted.grant is not None else None
    result.update(
        credit_gb_months=gb_months(after.credit_byte_seconds),
        usage_gb_months=gb_months(after.usage_byte_seconds),
        remaining_gb_months=gb_months(after.remaining_byte_seconds),
    )
    verb = (
        ("would grant" if a.dry_run else "granted")
        if byte_seconds > 0
        else ("would refund" if a.dry_run else "refunded")
    )
    op.emit(
        result,
        f"{verb} {abs(result['gb_months'])} GB-months {'to' if byte_seconds > 0 else 'of'} {result['npub']}"
        f" ({a.reason.strip()}); credit left: {result['remaining_gb_months']} GB-months",
    )
    return 0


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""
