"""When an account's credit ran out is kept by the meter itself (sql/007), exactly, whatever happened
to the account afterwards; and `credit_runs_out_at` says when it will, or did."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from fractions import Fraction

from hypothesis import HealthCheck, given, note, settings
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
    """The meter in exact arithmetic: usage grows by billable bytes per second between steps. It keeps
    the whole usage curve, so when the credit ran out is found exactly by inverting it."""

    def __init__(self, free: int) -> None:
        self.free = free
        self.t = Fraction(0)
        self.usage = Fraction(0)
        self.credit = Fraction(0)
        self.storage = 0
        self.segments: list[tuple[Fraction, Fraction, Fraction, int]] = []  # start, end, usage at start, rate
        self.storage_changed_at = Fraction(0)
        self.first_over_at = Fraction(0)

    def advance(self, t: Fraction) -> None:
        rate = max(0, self.storage - self.free)
        self.segments.append((self.t, t, self.usage, rate))
        if self.usage <= self.credit < self.usage + rate * (t - self.t):
            self.first_over_at = self.t + (self.credit - self.usage) / rate  # this lapse began
        self.usage += rate * (t - self.t)
        self.t = t

    @property
    def ran_out(self) -> Fraction | None:
        """The moment usage passed the credit as it now stands (None while it has not)."""
        if self.usage <= self.credit:
            return None
        for start, end, usage, rate in self.segments:
            if rate and usage + rate * (end - start) > self.credit >= usage:
                return start + (self.credit - usage) / rate
        raise AssertionError("usage passed the credit without crossing it")


def seconds(moment: datetime) -> float:
    return (moment - T0).total_seconds()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=steps, free=st.sampled_from([0, GB]))
async def test_the_moment_credit_ran_out_is_exact_whatever_follows(db, examples_seen, history, free):
    examples_seen.append(history)
    note(f"history={history} free={free}")
    pubkey = secrets.token_hex(32)
    model = Model(free)
    async with db.transaction():
        await accounts.adopt_allowance(db, free, T0)  # as the server does at start
    await accounts.ensure(db, pubkey, T0)
    elapsed = 0
    shifted = False
    for gap, action, amount in history:
        elapsed += gap
        now = T0 + timedelta(seconds=elapsed)
        model.advance(Fraction(elapsed))
        if action == "advance":
            await accounts.advance(db, pubkey, now, free_bytes=free)
        elif action == "store" and model.usage > model.credit:
            # The server stores nothing more for an account over its credit (the room check in the
            # commit), so while lapsed its storage only shrinks.
            await accounts.advance(db, pubkey, now, free_bytes=free)
        elif action == "store":
            await accounts.change_storage(db, pubkey, now, amount, free_bytes=free)
            model.storage += amount
            model.storage_changed_at = model.t
        elif action == "delete":
            amount = min(amount, model.storage)
            await accounts.change_storage(db, pubkey, now, -amount, free_bytes=free)
            model.storage -= amount
            model.storage_changed_at = model.t
        else:
            await accounts.add_credit(db, pubkey, now, amount * 86_400, free_bytes=free)
            was_over = model.usage > model.credit
            model.credit += amount * 86_400
            # Over before and after: the credit moves the ran-out time by what it covers at today's
            # rate, which is exact only if the rate has not changed since it ran out.
            shifted = shifted or (was_over and model.usage > model.credit)
        if model.usage <= model.credit:
            shifted = False
    row = await db.fetchrow(
        f"SELECT credit_ran_out_at, {accounts.runs_out_at('$2::bigint')} AS runs_out FROM accounts"
        " WHERE pubkey = $1",
        pubkey,
        free,
    )
    exact = model.ran_out
    billable = max(0, model.storage - free)
    if exact is None:
        assert row["credit_ran_out_at"] is None
    elif billable > 0:  # with nothing billable left, nothing is running out: the time is not used
        kept = seconds(row["credit_ran_out_at"])
        # Never before it truly ran out, never after the last advance; exact unless credit was bought
        # while over it after the rate changed (placed at today's rate, a gentler one: storage only
        # shrinks while lapsed).
        assert float(exact) - 0.001 <= kept <= float(model.t) + 0.001
        if not shifted or model.storage_changed_at <= model.first_over_at:
            assert abs(kept - float(exact)) < 0.001
    if billable == 0:
        assert row["runs_out"] is None
    elif model.usage > model.credit:
        assert row["runs_out"] == row["credit_ran_out_at"]
    else:
        expected = model.t + min((model.credit - model.usage) / billable, Fraction(10**11))  # capped
        assert abs(seconds(row["runs_out"]) - float(expected)) < 0.001
