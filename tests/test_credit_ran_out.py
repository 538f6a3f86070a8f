"""When an account's credit ran out is kept by the meter itself (sql/007), exactly, whatever happened
to the account afterwards; and `credit_runs_out_at` says when it will, or did."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from fractions import Fraction

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from satellite.db import accounts

T0 = datetime(2026, 1, 1, tzinfo=UTC)
GB = 10**9

steps = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=40 * 86_400),  # seconds since the previous step
        st.sampled_from(["advance", "store", "delete", "credit"]),
        st.integers(min_value=1, max_value=5 * GB),
    ),
    min_size=1,
    max_size=12,
)


class Model:
    """The meter in exact arithmetic: usage grows by billable bytes per second between steps."""

    def __init__(self, free: int) -> None:
        self.free = free
        self.t = Fraction(0)
        self.usage = Fraction(0)
        self.credit = Fraction(0)
        self.storage = 0
        self.ran_out: Fraction | None = None

    def advance(self, t: Fraction) -> None:
        rate = max(0, self.storage - self.free)
        before = self.usage
        self.usage += rate * (t - self.t)
        if self.usage > self.credit and before <= self.credit and rate > 0:
            self.ran_out = self.t + (self.credit - before) / rate
        self.t = t

    def settle(self) -> None:
        if self.usage <= self.credit:
            self.ran_out = None


def seconds(moment: datetime) -> float:
    return (moment - T0).total_seconds()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=steps, free=st.sampled_from([0, GB]))
async def test_the_moment_credit_ran_out_is_exact_whatever_follows(db, examples_seen, history, free):
    examples_seen.append(history)
    pubkey = secrets.token_hex(32)
    model = Model(free)
    await accounts.ensure(db, pubkey, T0)
    elapsed = 0
    for gap, action, amount in history:
        elapsed += gap
        now = T0 + timedelta(seconds=elapsed)
        model.advance(Fraction(elapsed))
        if action == "advance":
            await accounts.advance(db, pubkey, now, free_bytes=free)
        elif action == "store":
            await accounts.change_storage(db, pubkey, now, amount, free_bytes=free)
            model.storage += amount
        elif action == "delete":
            amount = min(amount, model.storage)
            await accounts.change_storage(db, pubkey, now, -amount, free_bytes=free)
            model.storage -= amount
        else:
            await accounts.add_credit(db, pubkey, now, amount * 86_400, free_bytes=free)
            model.credit += amount * 86_400
        model.settle()
    row = await db.fetchrow(
        f"SELECT credit_ran_out_at, {accounts.runs_out_at('$2::bigint')} AS runs_out FROM accounts"
        " WHERE pubkey = $1",
        pubkey,
        free,
    )
    if model.ran_out is None:
        assert row["credit_ran_out_at"] is None
    else:
        assert abs(seconds(row["credit_ran_out_at"]) - float(model.ran_out)) < 0.001
    billable = max(0, model.storage - free)
    if billable == 0:
        assert row["runs_out"] is None
    elif model.usage > model.credit:
        assert abs(seconds(row["runs_out"]) - float(model.ran_out)) < 0.001
    else:
        expected = model.t + (model.credit - model.usage) / billable
        assert abs(seconds(row["runs_out"]) - float(expected)) < 0.001
