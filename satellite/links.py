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

    def server_url(self, sha256: str, ext: str) -> str:
        """The blob on this server, with its extension, whatever serves the bytes (BUD-02 `url`)."""
        return f"{self.base_url}/{sha256}.{ext}"

    def descriptor(self, row: FileRow, *, original: str | None = None) -> dict[str, Any]:
        """A file as Blossom returns it (BUD-02), with `nip94` (BUD-08), `magnet` and `infohash`;
        `original` is the hash of what was uploaded, when the server stored a processed copy."""
        described = self.describe(row)
        url = self.server_url(row.sha256, row.ext)
        tags = nip94_tags({**described, "url": url}, row)
        if original is not None:
            tags = [["ox", original] if tag[0] == "ox" else tag for tag in tags]
        return {
            "url": url,
            "sha256": row.sha256,
            "size": row.size,
            "type": row.type,
            "uploaded": described["created"],
            "nip94": tags,
            "magnet": described["magnet"],
            "infohash": row.infohash,
        }

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


def nip94_tags(described: dict[str, Any], row: FileRow) -> list[list[str]]:
    """Tags for a NIP-94 (kind 1063) event about the file, from its description (`Links.describe`).
    The blob is stored as received, so `ox` (hash of the original) equals `x`; images also get `dim`
    and `blurhash` once their pixels were read."""
    tags = [
        ["url", described["url"]],
        ["m", described["type"]],
        ["x", described["sha256"]],
        ["ox", described["sha256"]],
        ["size", str(described["size"])],
        ["name", described["name"]],
        ["i", described["infohash"]],
        ["magnet", described["magnet"]],
    ]
    if row.width is not None and row.height is not None:
        tags.append(["dim", f"{row.width}x{row.height}"])
    if row.blurhash is not None:
        tags.append(["blurhash", row.blurhash])
    return tags
