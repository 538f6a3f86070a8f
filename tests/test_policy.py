"""The account policy, exhaustively: the free allowance, the prepaid-time rule, the room it leaves, and
how much a refusal says to buy. Pure; the same rule in SQL is checked in test_quota_property."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from satellite.billing.metering import BYTE_SECONDS_PER_GB_MONTH, Balance
from satellite.billing.policy import AccountPolicy
from satellite.errors import QuotaExceeded

BIGINT_MAX = 2**63 - 1


def micro(n: int) -> Decimal:
    return Decimal(f"{n}E-6")


amounts = st.one_of(st.integers(0, 10**22), st.integers(0, 10**40)).map(micro)
sizes = st.one_of(st.integers(0, 10**7), st.integers(0, BIGINT_MAX // 4))
policies = st.builds(
    AccountPolicy,
    free_bytes=st.one_of(st.just(0), st.integers(0, 10**7), st.integers(0, BIGINT_MAX // 4)),
    min_prepaid_seconds=st.one_of(st.sampled_from([1, 60, 86_400, 2_592_000]), st.integers(1, 10**10)),
)


def needed(policy: AccountPolicy, balance: Balance, extra: int) -> Decimal:
    """The rule, stated directly: byte-seconds missing for `extra` more bytes."""
    stored = balance.storage_bytes + extra
    if stored <= policy.free_bytes:
        return Decimal(0)
    return max(
        Decimal(0),
        (stored - policy.free_bytes) * policy.min_prepaid_seconds
        - (balance.credit_byte_seconds - balance.usage_byte_seconds),
    )


@given(policies, amounts, amounts, sizes, sizes)
@example(AccountPolicy(1000, 86_400), Decimal(0), Decimal(0), 600, 400)  # exactly the allowance
@example(AccountPolicy(0, 10), Decimal(100), Decimal(0), 0, 10)  # exactly the prepaid time
def test_shortfall_is_the_rule(policy, credit, usage, stored, extra) -> None:
    balance = policy.balance(credit, usage, stored)
    assert policy.shortfall(balance, extra) == needed(policy, balance, extra)


@given(policies, amounts, amounts, sizes, sizes)
@example(AccountPolicy(1000, 86_400), Decimal(0), Decimal(0), 600, 400)
@example(AccountPolicy(0, 10), Decimal(100), Decimal(0), 0, 10)
@example(AccountPolicy(0, 10), Decimal(100), Decimal("0.000001"), 0, 10)
def test_room_is_the_largest_upload_the_rule_allows(policy, credit, usage, stored, extra) -> None:
    balance = policy.balance(credit, usage, stored)
    room = policy.room(balance)
    assert room.bytes >= 0
    assert policy.shortfall(balance, room.bytes) == 0 or room.bytes == 0
    assert policy.shortfall(balance, room.bytes + 1) > 0
    if extra == 0:
        return  # uploads are never empty
    if policy.shortfall(balance, extra) == 0:
        room.check(extra)
    else:
        with pytest.raises(QuotaExceeded):
            room.check(extra)


@given(policies, amounts, amounts, sizes, st.integers(1, 10**12))
def test_a_refusal_says_how_much_to_buy(policy, credit, usage, stored, extra) -> None:
    balance = policy.balance(credit, usage, stored)
    missing = policy.shortfall(balance, extra)
    if missing == 0:
        return
    refusal = policy.refusal(missing)
    n = refusal.gb_months_needed
    assert f"buy at least {n} GB-month" in refusal.reason
    # Buying that many is enough, and one fewer (when any) is not.
    bought = policy.balance(credit + n * BYTE_SECONDS_PER_GB_MONTH, usage, stored)
    assert policy.shortfall(bought, extra) == 0
    if n > 1:
        short = policy.balance(credit + (n - 1) * BYTE_SECONDS_PER_GB_MONTH, usage, stored)
        assert policy.shortfall(short, extra) > 0


def test_the_refusal_names_the_prepaid_time() -> None:
    refusal = AccountPolicy(0, 86_400).refusal(Decimal(1))
    assert "buy at least 1 GB-month with GET /account/credit" in refusal.reason
    assert "1 day of prepaid storage" in refusal.reason
    assert "2 hours" in AccountPolicy(0, 7200).refusal(Decimal(1)).reason
    assert "90 seconds" in AccountPolicy(0, 90).refusal(Decimal(1)).reason
    assert (
        "buy at least 2 GB-months"
        in AccountPolicy(0, 1).refusal(Decimal(BYTE_SECONDS_PER_GB_MONTH + 1)).reason
    )
