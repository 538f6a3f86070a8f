"""Public URLs, magnets and the JSON shape of a stored file. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from satellite.db.files import FileRow
from satellite.torrent import magnet_link


@dataclass(frozen=True, slots=True)
class Links:
    base_url: str
    trackers: tuple[str, ...]
    # Set when objects are served straight from the bucket: the object URL is this plus the sha256.
    redirect_base: str | None = None

    def blob_url(self, sha256: str, ext: str) -> str:
        if self.redirect_base is not None:
            return f"{self.redirect_base}{sha256}"
        return f"{self.base_url}/{sha256}.{ext}"

    def torrent_url(self, sha256: str) -> str:
        return f"{self.base_url}/{sha256}.torrent"

    def magnet(self, *, sha256: str, ext: str, infohash: str, name: str, size: int) -> str:
        return magnet_link(
            infohash=infohash,
            display_name=name,
            size=size,
            trackers=list(self.trackers),
            web_seed=self.blob_url(sha256, ext),
            torrent_url=self.torrent_url(sha256),
        )

    def describe(self, row: FileRow) -> dict[str, Any]:
        """A file as Satellite v1 returns it: from PUT /item and in GET /account `files`."""
        url = self.blob_url(row.sha256, row.ext)
        magnet = self.magnet(
            sha256=row.sha256, ext=row.ext, infohash=row.infohash, name=row.name, size=row.size
        )
        return {
            "created": int(row.created_at.timestamp()),
            "sha256": row.sha256,
            "name": row.name,
            "url": url,
            "infohash": row.infohash,
            "magnet": magnet,
            "size": row.size,
            "type": row.type,
            "label": row.label,
        }


def nip94_tags(described: dict[str, Any]) -> list[list[str]]:
    """Tags for a NIP-94 (kind 1063) event about the file. The blob is stored unmodified, so `ox`
    (hash of the original) equals `x`."""
    return [
        ["url", described["url"]],
        ["m", described["type"]],
        ["x", described["sha256"]],
        ["ox", described["sha256"]],
        ["size", str(described["size"])],
        ["name", described["name"]],
        ["i", described["infohash"]],
        ["magnet", described["magnet"]],
    ]
