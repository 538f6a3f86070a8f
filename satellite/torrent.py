"""BitTorrent v1 math for one stored file: piece length, piece hashes, info dict, infohash, magnet,
`.torrent` bytes. Pure: no I/O; the caller feeds bytes in."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from urllib.parse import quote, urlencode

import torf


def piece_length_for(size: int) -> int:
    """torf's rule (what common clients pick): a power of two between 16 KiB and 16 MiB."""
    return int(torf.Torrent.calculate_piece_size(max(size, 1)))


class PieceHasher:
    """SHA-1 of every `piece_length` bytes, fed in chunks of any size."""

    def __init__(self, piece_length: int) -> None:
        self.piece_length = piece_length
        self._current = hashlib.sha1()
        self._filled = 0
        self._digests: list[bytes] = []

    def update(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            room = self.piece_length - self._filled
            part = view[:room]
            self._current.update(part)
            self._filled += len(part)
            view = view[len(part) :]
            if self._filled == self.piece_length:
                self._digests.append(self._current.digest())
                self._current = hashlib.sha1()
                self._filled = 0

    def finish(self) -> bytes:
        """All piece hashes concatenated (the last piece may be short)."""
        if self._filled:
            self._digests.append(self._current.digest())
            self._current = hashlib.sha1()
            self._filled = 0
        return b"".join(self._digests)


def bencode(value: object) -> bytes:
    out: list[bytes] = []
    _bencode_into(value, out)
    return b"".join(out)


def _bencode_into(value: object, out: list[bytes]) -> None:
    if isinstance(value, bool):
        raise TypeError("booleans have no bencoding")
    if isinstance(value, int):
        out.append(b"i%de" % value)
    elif isinstance(value, bytes):
        out.append(b"%d:" % len(value))
        out.append(value)
    elif isinstance(value, str):
        _bencode_into(value.encode("utf-8"), out)
    elif isinstance(value, list | tuple):
        out.append(b"l")
        for item in value:
            _bencode_into(item, out)
        out.append(b"e")
    elif isinstance(value, dict):
        out.append(b"d")
        keys = {(k.encode("utf-8") if isinstance(k, str) else k): v for k, v in value.items()}
        for key in sorted(keys):
            _bencode_into(key, out)
            _bencode_into(keys[key], out)
        out.append(b"e")
    else:
        raise TypeError(f"cannot bencode {type(value).__name__}")


@dataclass(frozen=True, slots=True)
class TorrentInfo:
    """The single-file info dictionary. `name` is the CDN file name `<sha256>.<ext>`, so the infohash
    depends only on the bytes and the extension, never on who uploaded them or what they called them."""

    name: str
    length: int
    piece_length: int
    pieces: bytes

    def as_dict(self) -> dict[str, object]:
        return {
            "length": self.length,
            "name": self.name,
            "piece length": self.piece_length,
            "pieces": self.pieces,
        }

    @property
    def infohash(self) -> str:
        return hashlib.sha1(bencode(self.as_dict())).hexdigest()


def torrent_bytes(info: TorrentInfo, *, web_seed: str, trackers: list[str]) -> bytes:
    """The `.torrent` file: info, trackers and our public URL as a BEP-19 web seed (`url-list`)."""
    meta: dict[str, object] = {"info": info.as_dict(), "url-list": [web_seed]}
    if trackers:
        meta["announce"] = trackers[0]
        meta["announce-list"] = [[t] for t in trackers]
    return bencode(meta)


def magnet_link(
    *, infohash: str, display_name: str, size: int, trackers: list[str], web_seed: str, torrent_url: str
) -> str:
    params: list[tuple[str, str]] = [("dn", display_name), ("xl", str(size))]
    params += [("tr", t) for t in trackers]
    params += [("ws", web_seed), ("xs", torrent_url)]
    # Percent-encoding only (a space is %20, never "+"): clients such as Transmission decode magnet
    # values with a plain percent-decoder, which would show a "+" in the name.
    return f"magnet:?xt=urn:btih:{infohash}&" + urlencode(params, quote_via=quote)
