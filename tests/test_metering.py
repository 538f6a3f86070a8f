"""Metering properties: usage is the exact integral of billable bytes over time, in Python and in SQL.

The pure tests check `satellite.billing.metering` against a closed form computed here with integer
microseconds; the database test checks that `satellite.db.accounts` (the same rule in SQL) stores exactly
what the pure function computes, step by step.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from satellite.billing import balance, metering
from satellite.billing.metering import Balance
from satellite.billing.policy import AccountPolicy
from satellite.db import accounts

BIGINT_MAX = 2**63 - 1  # storage_bytes and the free allowance are PostgreSQL bigints
MICROSECOND = timedelta(microseconds=1)


def micros(since: datetime, now: datetime) -> int:
    """Whole microseconds from `since` to `now`, by integer arithmetic only."""
    return (now - since) // MICROSECOND


def from_micro_units(n: int) -> Decimal:
    """`n` millionths as an exact Decimal (the string constructor never rounds)."""
    return Decimal(f"{n}E-6")


def to_micro_units(d: Decimal) -> int:
    """An exact Decimal with at most 6 decimal places as an integer count of millionths."""
    sign, digits, exponent = d.as_tuple()
    assert isinstance(exponent, int) and exponent >= -6, d
    n = int("".join(map(str, digits))) * 10 ** (exponent + 6)
    return -n if sign else n


# --- strategies ---------------------------------------------------------------------------------------


def instants(min_year: int = 1, max_year: int = 9999) -> st.SearchStrategy[datetime]:
    return st.datetimes(
        min_value=datetime(min_year, 1, 1),
        max_value=datetime(max_year, 12, 31, 23, 59, 59, 999_999),
        timezones=st.just(UTC),
    )


def byte_counts(limit: int) -> st.SearchStrategy[int]:
    """Sizes up to `limit`, weighted towards the everyday ones but reaching the extremes."""
    return st.one_of(st.integers(0, min(limit, 10**7)), st.integers(0, limit))


@dataclass(frozen=True)
class History:
    """Storage changes of one account: at times[i] the stored total changes by deltas[i] (times[0] is
    when the account appears, with nothing stored), then the meter is read at `end`."""

    times: list[datetime]
    deltas: list[int]
    end: datetime
    free: int

    def totals(self) -> list[int]:
        out, total = [], 0
        for delta in self.deltas:
            total += delta
            out.append(total)
        return out


@st.composite
def histories(draw, max_total: int = BIGINT_MAX, min_year: int = 1, max_year: int = 9999) -> History:
    stamps = sorted(draw(st.lists(instants(min_year, max_year), min_size=2, max_size=12)))
    times, end = stamps[:-1], stamps[-1]
    deltas, total = [], 0
    for _ in times:
        if total > 0 and draw(st.booleans()):
            delta = -draw(st.one_of(st.just(total), byte_counts(total)))  # delete some or all
        else:
            delta = draw(byte_counts(max_total - total))  # upload
        total += delta
        deltas.append(delta)
    totals = History(times, deltas, end, 0).totals()
    # The free allowance: anything, or right at / around a stored total (the interesting edges).
    near = st.sampled_from(totals).flatmap(
        lambda t: st.sampled_from([max(0, t - 1), t, min(BIGINT_MAX, t + 1)])
    )
    free = draw(st.one_of(st.just(0), near, byte_counts(BIGINT_MAX)))
    return History(times, deltas, end, free)


def closed_form(h: History) -> Decimal:
    """Sum over intervals of max(0, stored - free) x interval length, in integer byte-microseconds."""
    bounds = [*h.times, h.end]
    byte_micros = sum(
        max(0, stored - h.free) * micros(bounds[i], bounds[i + 1]) for i, stored in enumerate(h.totals())
    )
    return from_micro_units(byte_micros)


def meter(
    h: History, reads: Iterable[datetime] = (), stale: Iterable[tuple[int, timedelta]] = ()
) -> list[Decimal]:
    """Usage after every step of the history, via metering.advance, the way the application does it:
    advance to now, then apply the change. Extra `reads` happen in time order; a `stale` read (k, back)
    comes right after step k, from a clock `back` behind the meter's latest instant."""
    changes = [(t, 0, i, d) for i, (t, d) in enumerate(zip(h.times, h.deltas, strict=True))]
    events = sorted(changes + [(t, 1, 0, 0) for t in reads])  # at equal instants: changes first, in order
    events.append((h.end, 2, 0, 0))
    late = sorted(stale, key=lambda s: s[0])
    usage, stored, since = Decimal(0), 0, h.times[0]
    seen = []
    for k, (now, _, _, delta) in enumerate(events):
        usage = metering.advance(usage, stored, since, now, free_bytes=h.free)
        since = max(since, now)
        stored += delta
        seen.append(usage)
        for _, back in (s for s in late if s[0] == k):
            usage = metering.advance(usage, stored, since, since - back, free_bytes=h.free)
            seen.append(usage)
    return seen


# --- pure properties ----------------------------------------------------------------------------------


@given(histories())
def test_usage_never_decreases(h: History) -> None:
    seen = meter(h)
    assert all(a <= b for a, b in zip([Decimal(0), *seen], seen, strict=False))


@given(histories(), st.data())
def test_usage_does_not_depend_on_how_often_it_is_read(h: History, data) -> None:
    reads = data.draw(
        st.lists(
            st.datetimes(
                min_value=h.times[0].replace(tzinfo=None),
                max_value=h.end.replace(tzinfo=None),
                timezones=st.just(UTC),
            ),
            max_size=10,
        )
    )
    assert meter(h, reads)[-1] == meter(h)[-1]


@given(histories())
def test_usage_is_the_integral_of_billable_bytes(h: History) -> None:
    assert meter(h)[-1] == closed_form(h)


@given(histories(), st.data())
def test_a_clock_going_backwards_adds_nothing(h: History, data) -> None:
    # Directly: advancing to an earlier instant leaves usage as it was.
    usage = from_micro_units(data.draw(st.integers(0, 10**30)))
    since = data.draw(instants())
    earlier = data.draw(st.datetimes(max_value=since.replace(tzinfo=None), timezones=st.just(UTC)))
    stored = data.draw(byte_counts(BIGINT_MAX))
    assert metering.advance(usage, stored, since, earlier, free_bytes=h.free) == usage
    assert metering.elapsed_seconds(since, earlier) == 0
    # In a history: reads from a clock that went backwards change nothing, then or later.
    room = (h.times[0] - datetime(1, 1, 1, tzinfo=UTC)) // MICROSECOND  # back to the earliest datetime
    gaps = st.integers(0, min(room, 10**6)) | st.integers(0, room)
    stale = data.draw(st.lists(st.tuples(st.integers(0, len(h.times)), gaps.map(lambda n: n * MICROSECOND))))
    assert meter(h, stale=stale)[-1] == meter(h)[-1] == closed_form(h)


def test_elapsed_seconds_has_microsecond_resolution() -> None:
    t = datetime(2024, 2, 28, 23, 59, 59, 999_999, tzinfo=UTC)
    assert metering.elapsed_seconds(t, t + MICROSECOND) == Decimal("0.000001")
    assert metering.elapsed_seconds(t, t + timedelta(days=1, microseconds=3)) == Decimal("86400.000003")
    assert metering.advance(Decimal(0), 3, t, t + MICROSECOND, free_bytes=1) == Decimal("0.000002")


# --- Balance ------------------------------------------------------------------------------------------

# Byte-seconds to the microsecond, beyond the 28 significant digits of Decimal's default context.
exact_amounts = st.one_of(st.integers(0, 10**27), st.integers(0, 10**45)).map(from_micro_units)


@given(exact_amounts, exact_amounts, byte_counts(BIGINT_MAX), byte_counts(BIGINT_MAX))
@example(Decimal(10**30), Decimal(0), 1, 0)  # more than 28 digits of seconds: no DivisionImpossible
@example(Decimal("100000000000000000000000000.000001"), Decimal("0.000002"), 1, 0)
def test_seconds_remaining(credit: Decimal, usage: Decimal, storage: int, free: int) -> None:
    balance = Balance(credit, usage, storage, free)
    billable = max(0, storage - free)
    if billable == 0:
        assert balance.seconds_remaining is None
        return
    left_micros = max(0, to_micro_units(credit) - to_micro_units(usage))
    seconds = balance.seconds_remaining
    assert seconds == left_micros // (billable * 1_000_000)
    # And it means what it says: the credit covers `seconds` more seconds, and not one more.
    assert billable * seconds * 1_000_000 <= left_micros < billable * (seconds + 1) * 1_000_000


@given(st.integers(0, 10**20))
def test_credit_units(n: int) -> None:
    assert metering.credit_for(n) == n * 10**9 * 2_592_000
    assert metering.gb_months(metering.credit_for(n)) == n


def test_units_by_example() -> None:
    assert metering.BYTE_SECONDS_PER_GB_MONTH == 2_592_000_000_000_000
    assert metering.gb_months(10**9 * 30 * 86_400) == 1
    assert metering.gb_months(Decimal("1296000000000000.000000")) == Decimal("0.5")


# --- SQL agrees with Python ---------------------------------------------------------------------------

PUBKEY = "a" * 64  # changes only
PUBKEY_READ_OFTEN = "b" * 64  # the same changes, with reads in between


@st.composite
def operations(draw):
    """A history of change_storage / add_credit / advance calls at non-decreasing instants, with the
    free allowance fixed (as it is by the settings)."""
    h = draw(histories(min_year=1970, max_year=2200))
    ops = []
    for t, delta in zip(h.times[1:], h.deltas[1:], strict=True):
        kind = draw(st.sampled_from(["storage", "credit", "read"]))
        if kind == "credit":
            ops.append((t, "credit", draw(st.integers(0, 10**24))))
        ops.append((t, "storage", delta))
        if kind == "read":
            ops.append((t, "read", 0))
    # Extra reads of one account before op i, `back` microseconds before it: between the previous call
    # and this one, or (a clock gone backwards) before the previous call.
    back = st.one_of(st.integers(0, 10**6), st.integers(0, 10 * 365 * 86_400 * 10**6))
    extra_reads = draw(st.lists(st.tuples(st.integers(0, len(ops)), back), max_size=8))
    return h, ops, extra_reads


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations())
async def test_sql_meter_agrees_with_python(db, examples_seen, example) -> None:
    examples_seen.append(example)
    h, ops, extra_reads = example
    free = h.free
    await db.execute("DELETE FROM accounts")
    for pubkey in (PUBKEY, PUBKEY_READ_OFTEN):
        async with db.transaction():
            await accounts.ensure(db, pubkey, h.times[0])
            await accounts.change_storage(db, pubkey, h.times[0], h.deltas[0], free_bytes=free)

    usage, stored, credit, since = Decimal(0), h.deltas[0], 0, h.times[0]
    for i, (now, kind, amount) in enumerate(ops):
        for at in (now - timedelta(microseconds=back) for j, back in extra_reads if j == i):
            await accounts.advance(db, PUBKEY_READ_OFTEN, at, free_bytes=free)
        usage = metering.advance(usage, stored, since, now, free_bytes=free)
        since = now
        for pubkey in (PUBKEY, PUBKEY_READ_OFTEN):
            async with db.transaction():
                if kind == "storage":
                    await accounts.change_storage(db, pubkey, now, amount, free_bytes=free)
                elif kind == "credit":
                    await accounts.add_credit(db, pubkey, now, amount, free_bytes=free)
                else:
                    row = await accounts.advance(db, pubkey, now, free_bytes=free)
                    assert row is not None and row.usage_byte_seconds == usage
        if kind == "storage":
            stored += amount
        elif kind == "credit":
            credit += amount
        row = await accounts.get(db, PUBKEY)
        assert row is not None
        assert (row.usage_byte_seconds, row.storage_bytes, row.usage_updated_at) == (usage, stored, now)

    usage = metering.advance(usage, stored, since, h.end, free_bytes=free)
    assert usage == closed_form(h)
    # The balance computed in Python from the stored row equals the one the SQL settles and stores.
    expected = Balance(Decimal(credit), usage, stored, free)
    policy = AccountPolicy(free_bytes=free)
    assert balance.balance_at(await accounts.get(db, PUBKEY), h.end, policy) == expected
    assert await balance.settled_balance(db, PUBKEY, h.end, policy) == expected
    for pubkey in (PUBKEY, PUBKEY_READ_OFTEN):
        row = await accounts.advance(db, pubkey, h.end, free_bytes=free)
        assert row is not None
        assert row.usage_byte_seconds == usage
        assert (row.credit_byte_seconds, row.storage_bytes, row.usage_updated_at) == (credit, stored, h.end)
