"""satellite.http_range: Range, If-None-Match and If-Range rules, checked against a naive reference."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from satellite.http_range import (
    MAX_RANGES,
    ByteRange,
    RangeNotSatisfiable,
    none_match,
    parse_range,
    range_applies,
)

ETAG = '"' + "ab" * 32 + '"'
UNSATISFIABLE = "unsatisfiable"


def selected(header: str | None, size: int) -> set[int] | str | None:
    """What parse_range selects: a set of byte offsets, None for the whole file, or UNSATISFIABLE."""
    try:
        ranges = parse_range(header, size)
    except RangeNotSatisfiable:
        return UNSATISFIABLE
    if ranges is None:
        return None
    return {i for r in ranges for i in range(r.start, r.stop)}


def reference(specs: list[tuple[int | None, int | None]], size: int) -> set[int] | str | None:
    """RFC 9110 §14.1.2/§14.2, written the obvious way.

    A spec is (first, last): (n, None) is `n-`, (None, n) the suffix `-n`. The result is the union
    of the satisfiable ranges; an invalid spec or too many ranges means the header is ignored.
    """
    if len(specs) > MAX_RANGES:
        return None
    chosen: set[int] = set()
    satisfiable = False
    for first, last in specs:
        if first is None:
            assert last is not None
            if last > 0 and size > 0:
                satisfiable = True
                chosen.update(range(max(0, size - last), size))
            continue
        if last is not None and last < first:
            return None  # invalid range-spec: the whole header is ignored
        if first < size:
            satisfiable = True
            end = size - 1 if last is None else min(last, size - 1)
            chosen.update(range(first, end + 1))
    return chosen if satisfiable else UNSATISFIABLE


def render(spec: tuple[int | None, int | None]) -> str:
    first, last = spec
    return f"{'' if first is None else first}-{'' if last is None else last}"


positions = st.integers(min_value=0, max_value=80)
specs_strategy = st.one_of(
    st.tuples(positions, positions),  # first-last, sometimes invalid (last < first)
    st.tuples(positions, st.none()),  # first-
    st.tuples(st.none(), positions),  # -suffix
)
separators = st.sampled_from([",", ", ", " ,", " , ", ",\t"])
units = st.sampled_from(["bytes", "BYTES", "Bytes", " bytes "])


@st.composite
def range_headers(draw: st.DrawFn) -> tuple[str, list[tuple[int | None, int | None]]]:
    specs = draw(st.lists(specs_strategy, min_size=1, max_size=MAX_RANGES + 3))
    text = render(specs[0])
    for spec in specs[1:]:
        text += draw(separators) + render(spec)
    return f"{draw(units)}={text}", specs


def assert_well_formed(ranges: list[ByteRange], size: int) -> None:
    for r in ranges:
        assert 0 <= r.start < r.stop <= size, (r, size)
    for before, after in itertools.pairwise(ranges):
        assert before.stop < after.start, f"{before} and {after} overlap, touch or are unsorted"


@settings(max_examples=400, deadline=None)
@given(header_and_specs=range_headers(), size=st.integers(min_value=0, max_value=60))
def test_selects_what_rfc_9110_selects(header_and_specs, size):
    header, specs = header_and_specs
    assert selected(header, size) == reference(specs, size), header
    try:
        ranges = parse_range(header, size)
    except RangeNotSatisfiable:
        return
    if ranges is not None:
        assert_well_formed(ranges, size)


range_text = st.text(alphabet="bytesBYTES=-,0123456789 \t;x*", max_size=60)


@settings(max_examples=500, deadline=None)
@given(header=st.one_of(st.text(max_size=80), range_text, range_text.map(lambda t: "bytes=" + t)))
@example(header="bytes=" + "1" * 5000 + "-")
@example(header="bytes=0-" + "9" * 5000)
@example(header="bytes=-" + "9" * 5000)
@example(header="bytes=٣-٤")  # Arabic-Indic digits: str.isdigit() says yes, int() would accept them
@example(header="bytes=²-³")  # superscripts: isdigit() is True but int() raises
@example(header="bytes=0-1,,,2-3")
@example(header="=")
@example(header="bytes")
def test_arbitrary_header_text_never_breaks_parsing(header):
    for size in (0, 1, 10, 1000):
        try:
            ranges = parse_range(header, size)
        except RangeNotSatisfiable:
            continue
        if ranges is not None:
            assert ranges, "an empty list would answer 206 with no bytes"
            assert_well_formed(ranges, size)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-0", [ByteRange(0, 1)]),
        ("bytes=0-99", [ByteRange(0, 100)]),
        ("bytes=0-1000", [ByteRange(0, 100)]),  # last-pos past the end is clamped
        ("bytes=50-", [ByteRange(50, 100)]),  # open range: to the end
        ("bytes=99-", [ByteRange(99, 100)]),
        ("bytes=-1", [ByteRange(99, 100)]),  # suffix: the last byte
        ("bytes=-10", [ByteRange(90, 100)]),
        ("bytes=-100", [ByteRange(0, 100)]),
        ("bytes=-5000", [ByteRange(0, 100)]),  # suffix longer than the file: all of it
        ("bytes=0-9,20-29", [ByteRange(0, 10), ByteRange(20, 30)]),
        ("bytes=20-29,0-9", [ByteRange(0, 10), ByteRange(20, 30)]),  # sorted
        ("bytes=0-9,10-19", [ByteRange(0, 20)]),  # touching ranges are merged
        ("bytes=0-9,5-14", [ByteRange(0, 15)]),  # overlapping ranges are merged
        ("bytes=0-9,-10", [ByteRange(0, 10), ByteRange(90, 100)]),
        ("bytes=0-9, 200-300", [ByteRange(0, 10)]),  # the unsatisfiable part is dropped
        ("Bytes=0-0", [ByteRange(0, 1)]),  # the unit is case-insensitive
        ("bytes=0-" + "9" * 5000, [ByteRange(0, 100)]),  # huge numbers are just large, not errors
        ("bytes=-" + "9" * 5000, [ByteRange(0, 100)]),
        ("bytes=" + "0" * 5000 + "7-8", [ByteRange(7, 9)]),
    ],
)
def test_satisfiable_ranges(header, expected):
    assert parse_range(header, 100) == expected


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "bytes=",
        "bytes=,",
        "items=0-1",  # another unit
        "bytes 0-1",
        "0-1",
        "bytes=5-4",  # last < first: invalid
        "bytes=0-1,5-4",  # one invalid spec spoils the header
        "bytes=a-b",
        "bytes=1",
        "bytes=--1",
        "bytes=-",
        "bytes=1-2-3",
        "bytes=-1-2",
        "bytes=0x10-",
        "bytes=+1-2",
        "bytes=²-³",
        "bytes=٣-٤",
        "bytes=" + "9" * 5000 + "-" + "1" * 4999,  # last < first, both too long for int()
    ],
)
def test_malformed_or_foreign_headers_are_ignored(header):
    assert parse_range(header, 100) is None


@pytest.mark.parametrize(
    "header",
    [
        "bytes=100-",
        "bytes=100-200",
        "bytes=1000-2000,500-",
        "bytes=-0",  # a zero-length suffix selects nothing
        "bytes=" + "1" * 5000 + "-",  # far past the end, and too long for int()
        "bytes=" + "1" * 4000 + "-" + "2" * 4000,
    ],
)
def test_unsatisfiable_ranges_raise(header):
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, 100)


@pytest.mark.parametrize("header", ["bytes=0-", "bytes=0-0", "bytes=-1", "bytes=5-10", "bytes=0-0,-1"])
def test_zero_length_file_never_gets_a_range(header):
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, 0)


def test_zero_length_file_ignores_malformed_ranges():
    assert parse_range("bytes=x-", 0) is None
    assert parse_range(None, 0) is None


def test_too_many_ranges_are_ignored_not_refused():
    at_limit = "bytes=" + ",".join(f"{i * 10}-{i * 10}" for i in range(MAX_RANGES))
    over_limit = "bytes=" + ",".join(f"{i * 10}-{i * 10}" for i in range(MAX_RANGES + 1))
    assert parse_range(at_limit, 1000) == [ByteRange(i * 10, i * 10 + 1) for i in range(MAX_RANGES)]
    assert parse_range(over_limit, 1000) is None
    # counted as sent, before merging: many tiny overlapping ranges are a known amplification trick
    assert parse_range("bytes=" + ",".join(["0-0"] * (MAX_RANGES + 1)), 1000) is None
    assert parse_range("bytes=" + ",".join(["0-0"] * MAX_RANGES), 1000) == [ByteRange(0, 1)]


def test_content_range_names_inclusive_positions():
    assert ByteRange(0, 1).content_range(10) == "bytes 0-0/10"
    assert ByteRange(5, 10).content_range(10) == "bytes 5-9/10"
    assert ByteRange(5, 10).length == 5


@pytest.mark.parametrize(
    ("header", "matches"),
    [
        (None, False),
        ("", False),
        (ETAG, True),
        (f"W/{ETAG}", True),  # If-None-Match uses the weak comparison
        (f'"other", {ETAG}', True),
        (f'"a","b",W/{ETAG},"c"', True),
        (f'  "x" ,  {ETAG}  ', True),
        ("*", True),
        (' "x", * ', True),
        ('"other"', False),
        ('W/"other", "another"', False),
        (ETAG.strip('"'), False),  # unquoted is not the same entity-tag
        (ETAG[:-2] + '"', False),  # a prefix of ours
        ('"' + ETAG.strip('"').upper() + '"', False),  # entity-tags are case-sensitive
    ],
)
def test_none_match(header, matches):
    assert none_match(header, ETAG) is matches


@pytest.mark.parametrize(
    ("if_range", "applies"),
    [
        (None, True),  # no If-Range: Range is honoured
        (ETAG, True),
        (f" {ETAG} ", True),
        (f"W/{ETAG}", False),  # If-Range needs a strong match
        ('"other"', False),
        ("Wed, 21 Oct 2015 07:28:00 GMT", False),  # we have no Last-Modified: a date never matches
        ("*", False),
        ("", False),
    ],
)
def test_range_applies(if_range, applies):
    assert range_applies(if_range, ETAG) is applies


@settings(max_examples=200, deadline=None)
@given(
    others=st.lists(st.text(alphabet="abcdef0123456789", min_size=1, max_size=8), max_size=4),
    weak=st.booleans(),
    position=st.integers(min_value=0, max_value=4),
)
def test_none_match_finds_our_tag_anywhere_in_a_list(others, weak, position):
    tags = [f'"{o}"' for o in others]
    assert none_match(", ".join(tags), ETAG) is False
    tags.insert(min(position, len(tags)), ("W/" if weak else "") + ETAG)
    assert none_match(", ".join(tags), ETAG) is True
