"""Torrent math (satellite.torrent), checked against torf, an independent BitTorrent implementation."""

from __future__ import annotations

import hashlib
import io
import itertools
import os
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import torf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from satellite.torrent import PieceHasher, TorrentInfo, bencode, magnet_link, piece_length_for, torrent_bytes

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB
TRACKERS = ["udp://tracker.example:1337/announce", "wss://tracker.example", "http://t2.example/announce"]


# --- a tiny, strict bdecode (independent of the encoder under test) -------------------------------


def bdecode(data: bytes) -> object:
    value, end = _decode(data, 0)
    assert end == len(data), "trailing bytes after the bencoded value"
    return value


def _decode(data: bytes, i: int) -> tuple[object, int]:
    lead = data[i : i + 1]
    if lead == b"i":
        end = data.index(b"e", i)
        digits = data[i + 1 : end]
        assert digits == b"0" or not digits.lstrip(b"-").startswith(b"0"), "leading zero"
        assert digits != b"-0", "negative zero"
        return int(digits), end + 1
    if lead == b"l":
        items, i = [], i + 1
        while data[i : i + 1] != b"e":
            item, i = _decode(data, i)
            items.append(item)
        return items, i + 1
    if lead == b"d":
        result: dict[bytes, object] = {}
        previous: bytes | None = None
        i += 1
        while data[i : i + 1] != b"e":
            key, i = _decode(data, i)
            assert isinstance(key, bytes), "dictionary keys must be byte strings"
            assert previous is None or key > previous, "keys must be sorted and unique"
            previous = key
            result[key], i = _decode(data, i)
        return result, i + 1
    if lead.isdigit():
        colon = data.index(b":", i)
        length = int(data[i:colon])
        assert data[i:colon] == b"0" or not data[i:colon].startswith(b"0"), "leading zero in length"
        start = colon + 1
        assert start + length <= len(data), "string runs past the end"
        return data[start : start + length], start + length
    raise AssertionError(f"not bencode at offset {i}: {lead!r}")


# --- PieceHasher -------------------------------------------------------------------------------------


def reference_pieces(data: bytes, piece_length: int) -> bytes:
    return b"".join(
        hashlib.sha1(data[i : i + piece_length]).digest() for i in range(0, len(data), piece_length)
    )


def feed(hasher: PieceHasher, data: bytes, cuts: list[int]) -> bytes:
    points = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    for start, stop in itertools.pairwise(points):
        chunk = data[start:stop]
        hasher.update(memoryview(chunk) if start % 2 else chunk)
    return hasher.finish()


@settings(max_examples=200, deadline=None)
@given(
    data=st.binary(min_size=0, max_size=5000),
    piece_length=st.sampled_from([1, 7, 64, 1000, 4096]),
    cuts=st.lists(st.integers(min_value=0, max_value=5000), max_size=20),
)
def test_pieces_do_not_depend_on_chunking(data: bytes, piece_length: int, cuts: list[int]) -> None:
    got = feed(PieceHasher(piece_length), data, cuts)
    assert got == reference_pieces(data, piece_length)
    assert got == feed(PieceHasher(piece_length), data, [])  # one single update
    assert len(got) == 20 * -(-len(data) // piece_length)


def test_pieces_with_a_short_last_piece_and_empty_updates() -> None:
    data = os.urandom(3 * 16 * KIB + 5)
    hasher = PieceHasher(16 * KIB)
    hasher.update(b"")
    for i in range(0, len(data), 1000):
        hasher.update(data[i : i + 1000])
        hasher.update(b"")
    pieces = hasher.finish()
    assert len(pieces) == 4 * 20
    assert pieces[-20:] == hashlib.sha1(data[-5:]).digest()
    assert pieces == reference_pieces(data, 16 * KIB)


# --- piece length -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        (0, 16 * KIB),
        (1, 16 * KIB),
        (3 * MIB, 16 * KIB),
        (8 * MIB, 16 * KIB),  # 512 pieces of 16 KiB
        (8 * MIB + 1, 32 * KIB),
        (100 * MIB, 256 * KIB),
        (1 * GIB, 2 * MIB),
        (4 * GIB, 4 * MIB),
        (20 * GIB, 16 * MIB),
        (1024 * GIB, 16 * MIB),  # never above 16 MiB
    ],
)
def test_piece_length_known_sizes(size: int, expected: int) -> None:
    assert piece_length_for(size) == expected


@pytest.mark.parametrize("size", [1, 16 * KIB + 1, 8 * MIB + 1, 300 * MIB, 2 * GIB + 3, 17 * GIB])
def test_piece_length_is_what_torf_picks_for_a_file_of_that_size(tmp_path: Path, size: int) -> None:
    path = tmp_path / "sparse.bin"
    with path.open("wb") as handle:  # sparse: torf only needs the size to pick a piece size
        handle.truncate(size)
    assert torf.Torrent(path=path).piece_size == piece_length_for(size)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=64 * GIB), st.integers(min_value=0, max_value=GIB))
def test_piece_length_is_a_bounded_monotonic_power_of_two(size: int, more: int) -> None:
    length = piece_length_for(size)
    assert length & (length - 1) == 0
    assert 16 * KIB <= length <= 16 * MIB
    assert length == torf.Torrent.calculate_piece_size(max(size, 1))
    assert piece_length_for(size + more) >= length
    if size <= 32 * GIB:  # enough pieces to share well, few enough to keep the .torrent small
        assert -(-size // length) <= 2048


# --- bencode ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, b"i0e"),
        (42, b"i42e"),
        (-42, b"i-42e"),
        (2**70, b"i1180591620717411303424e"),
        (b"", b"0:"),
        (b"spam", b"4:spam"),
        ("spam", b"4:spam"),
        ("é", b"2:\xc3\xa9"),
        (b"\x00\xff", b"2:\x00\xff"),
        ([], b"le"),
        ([1, "a", [b"b"]], b"li1e1:al1:bee"),
        ((1, 2), b"li1ei2ee"),
        ({}, b"de"),
        ({"spam": "eggs", "cow": "moo"}, b"d3:cow3:moo4:spam4:eggse"),  # BEP 3 example, keys sorted
        ({"é": 1, "a": 2, "Z": 3}, b"d1:Zi3e1:ai2e2:\xc3\xa9i1ee"),  # sorted as raw bytes
        ({"piece length": 16384, "pieces": b""}, b"d12:piece lengthi16384e6:pieces0:e"),
    ],
)
def test_bencode_known_values(value: object, encoded: bytes) -> None:
    assert bencode(value) == encoded


@pytest.mark.parametrize("value", [True, False, 1.5, None, {1, 2}, object()])
def test_bencode_refuses_what_bencoding_cannot_express(value: object) -> None:
    with pytest.raises(TypeError):
        bencode(value)


bencodable = st.recursive(
    st.integers() | st.binary(max_size=40),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.binary(max_size=10), children),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(bencodable)
def test_bencode_round_trips(value: object) -> None:
    assert bdecode(bencode(value)) == value


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.text(st.characters(codec="utf-8"), max_size=8), st.text(max_size=8)))
def test_bencode_text_is_utf8(value: dict[str, str]) -> None:
    assert bdecode(bencode(value)) == {k.encode(): v.encode() for k, v in value.items()}


# --- infohash and .torrent bytes against torf ----------------------------------------------------


def info_for(data: bytes, name: str, chunk: int) -> TorrentInfo:
    piece_length = piece_length_for(len(data))
    hasher = PieceHasher(piece_length)
    for i in range(0, len(data), chunk):
        hasher.update(data[i : i + chunk])
    return TorrentInfo(name=name, length=len(data), piece_length=piece_length, pieces=hasher.finish())


@pytest.mark.parametrize(
    ("size", "ext", "chunk"),
    [
        (1, "bin", 1),
        (16 * KIB - 1, "txt", 4096),
        (16 * KIB, "png", 16 * KIB),
        (16 * KIB + 1, "mp4", 10_000),
        (200_000, "webm", 65_536),
        (8 * MIB + 12_345, "bin", 1024 * KIB),  # 32 KiB pieces, short last piece
    ],
)
def test_infohash_equals_torfs(tmp_path: Path, size: int, ext: str, chunk: int) -> None:
    data = os.urandom(size)
    name = f"{hashlib.sha256(data).hexdigest()}.{ext}"
    path = tmp_path / name
    path.write_bytes(data)

    ours = info_for(data, name, chunk)
    theirs = torf.Torrent(path=path, name=name, piece_size=piece_length_for(size), created_by=None)
    theirs.generate()

    assert theirs.piece_size == ours.piece_length
    assert theirs.metainfo["info"]["pieces"] == ours.pieces
    assert ours.infohash == theirs.infohash
    assert len(ours.infohash) == 40 and ours.infohash == ours.infohash.lower()


def test_infohash_depends_on_bytes_and_name_only() -> None:
    data = os.urandom(50_000)
    a = info_for(data, "x.bin", 1000)
    assert a.infohash == info_for(data, "x.bin", 7777).infohash
    assert a.infohash != info_for(data, "x.mp4", 1000).infohash
    changed = bytes([data[0] ^ 1]) + data[1:]
    assert a.infohash != info_for(changed, "x.bin", 1000).infohash


def test_torrent_bytes_read_by_torf_and_verifies_the_file(tmp_path: Path) -> None:
    data = os.urandom(100_000)
    name = f"{hashlib.sha256(data).hexdigest()}.bin"
    info = info_for(data, name, 3000)
    seed = f"https://cdn.example/{name}"
    raw = torrent_bytes(info, web_seed=seed, trackers=TRACKERS)

    decoded = bdecode(raw)
    assert isinstance(decoded, dict)
    assert hashlib.sha1(bencode(decoded[b"info"])).hexdigest() == info.infohash

    torrent = torf.Torrent.read_stream(io.BytesIO(raw))
    assert torrent.infohash == info.infohash
    assert torrent.name == name
    assert torrent.size == len(data)
    assert torrent.webseeds == [seed]
    assert torrent.trackers == [[t] for t in TRACKERS]
    assert str(torrent.metainfo["announce"]) == TRACKERS[0]

    (tmp_path / name).write_bytes(data)
    assert torrent.verify(tmp_path / name)
    (tmp_path / name).write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    with pytest.raises(torf.VerifyContentError):
        torrent.verify(tmp_path / name)


def test_torrent_bytes_without_trackers_has_no_announce() -> None:
    info = info_for(b"hello", "h.txt", 5)
    decoded = bdecode(torrent_bytes(info, web_seed="http://cdn.example/h.txt", trackers=[]))
    assert isinstance(decoded, dict)
    assert b"announce" not in decoded and b"announce-list" not in decoded
    assert decoded[b"url-list"] == [b"http://cdn.example/h.txt"]
    torrent = torf.Torrent.read_stream(io.BytesIO(bencode(decoded)))
    assert torrent.infohash == info.infohash


# --- magnet --------------------------------------------------------------------------------------

SHA = "ab" * 32
INFOHASH = "0123456789abcdef0123456789abcdef01234567"
SEED = f"https://cdn.example/{SHA}.mp4"
TORRENT_URL = f"https://cdn.example/{SHA}.torrent"


def make_magnet(name: str, size: int = 123_456, trackers: list[str] = TRACKERS) -> str:
    return magnet_link(
        infohash=INFOHASH,
        display_name=name,
        size=size,
        trackers=trackers,
        web_seed=SEED,
        torrent_url=TORRENT_URL,
    )


def strict_params(uri: str) -> list[tuple[str, str]]:
    """Magnet parameters decoded the way Transmission does (curl_unescape): `%XX` only, `+` stays `+`."""
    query = uri.split("?", 1)[1]
    return [(key, unquote(value)) for key, value in (pair.split("=", 1) for pair in query.split("&"))]


def test_magnet_has_every_parameter() -> None:
    uri = make_magnet("holiday clip.mp4")
    parts = urlsplit(uri)
    assert parts.scheme == "magnet"
    assert uri.startswith(f"magnet:?xt=urn:btih:{INFOHASH}&")
    query = parse_qs(parts.query, strict_parsing=True)
    assert query == {
        "xt": [f"urn:btih:{INFOHASH}"],
        "dn": ["holiday clip.mp4"],
        "xl": ["123456"],
        "tr": TRACKERS,
        "ws": [SEED],
        "xs": [TORRENT_URL],
    }
    assert "&dn=holiday%20clip.mp4&" in uri  # a space is %20: "+" would show up as "+" in some clients
    assert strict_params(uri) == [
        ("xt", f"urn:btih:{INFOHASH}"),
        ("dn", "holiday clip.mp4"),
        ("xl", "123456"),
        *[("tr", t) for t in TRACKERS],
        ("ws", SEED),
        ("xs", TORRENT_URL),
    ]


def test_magnet_escapes_what_would_break_the_query() -> None:
    name = "a&b=c#d?e+f %20 ü/x\r\n\t.mp4"
    uri = make_magnet(name)
    query = uri.split("?", 1)[1]
    assert not any(c in uri for c in "# \r\n\tü")
    assert query.count("&") == 4 + len(TRACKERS)  # separators only: xt dn xl tr.. ws xs
    assert "xs=https%3A%2F%2Fcdn.example%2F" in query
    assert parse_qs(query)["dn"] == [name]
    assert dict(strict_params(uri))["dn"] == name


def test_magnet_without_trackers() -> None:
    query = parse_qs(urlsplit(make_magnet("n.mp4", trackers=[])).query)
    assert "tr" not in query
    assert query["ws"] == [SEED] and query["xs"] == [TORRENT_URL]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    # torf itself turns a newline in `dn` into a space, so names here have none
    name=st.text(st.characters(codec="utf-8", blacklist_characters="\n"), min_size=1, max_size=40),
    size=st.integers(min_value=1, max_value=2**53),
)
def test_torf_parses_the_magnet_back(name: str, size: int) -> None:
    uri = make_magnet(name, size)
    assert parse_qs(urlsplit(uri).query)["dn"] == [name]
    assert dict(strict_params(uri))["dn"] == name
    magnet = torf.Magnet.from_string(uri)
    assert magnet.infohash == INFOHASH
    assert magnet.dn == name
    assert int(magnet.xl) == size
    assert list(magnet.tr) == TRACKERS
    assert list(magnet.ws) == [SEED]
    assert magnet.xs == TORRENT_URL
