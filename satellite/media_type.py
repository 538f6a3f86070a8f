"""MIME type and file extension of an uploaded blob: sniffed from its first bytes (libmagic), with the
client's file name as a fallback for generic answers. Pure apart from the libmagic call."""

from __future__ import annotations

import mimetypes
import re

try:  # libmagic is a system library; without it we fall back to the file name alone.
    import magic

    _magic: magic.Magic | None = magic.Magic(mime=True)
except (ImportError, OSError):  # pragma: no cover - depends on the machine
    _magic = None

SNIFF_BYTES = 64 * 1024
GENERIC_TYPES = frozenset({"application/octet-stream", "text/plain", "application/x-empty", "inode/x-empty"})
_PREFERRED_EXT = {
    "image/jpeg": "jpg",
    "image/png": "png",
    "image/gif": "gif",
    "image/webp": "webp",
    "image/avif": "avif",
    "image/svg+xml": "svg",
    "video/mp4": "mp4",
    "video/webm": "webm",
    "video/quicktime": "mov",
    "audio/mpeg": "mp3",
    "audio/ogg": "ogg",
    "audio/x-wav": "wav",
    "audio/wav": "wav",
    "audio/flac": "flac",
    "audio/mp4": "m4a",
    "text/plain": "txt",
    "text/html": "html",
    "text/css": "css",
    "text/javascript": "js",
    "application/json": "json",
    "application/pdf": "pdf",
    "application/zip": "zip",
    "application/gzip": "gz",
    "application/octet-stream": "bin",
}
# `.torrent` on a blob URL means "the torrent of this blob", never the blob itself.
RESERVED_EXT = frozenset({"torrent"})
_EXT_RE = re.compile(r"^[a-z0-9]{1,10}$")
ACTIVE_TYPES = frozenset(
    {
        "text/html",
        "application/xhtml+xml",
        "image/svg+xml",
        "text/xml",
        "application/xml",
        "text/javascript",
        "application/javascript",
        "application/x-javascript",
        "application/ecmascript",
        "text/xsl",
        "application/x-shockwave-flash",
        "application/wasm",
    }
)


def sniff(head: bytes) -> str:
    if _magic is None or not head:
        return "application/octet-stream"
    try:
        found = _magic.from_buffer(head)
    except Exception:  # libmagic errors on odd input: treat as unknown
        return "application/octet-stream"
    return found if isinstance(found, str) and "/" in found else "application/octet-stream"


def type_from_name(name: str | None) -> str | None:
    if not name:
        return None
    guessed, _ = mimetypes.guess_type(name, strict=False)
    return guessed


def extension_for(mime_type: str) -> str:
    ext = _PREFERRED_EXT.get(mime_type)
    if ext is None:
        guessed = mimetypes.guess_extension(mime_type, strict=False)
        ext = guessed.lstrip(".").lower() if guessed else "bin"
    if ext in RESERVED_EXT or not _EXT_RE.match(ext):
        return "bin"
    return ext


# Formats that are one container under several names: the sniffer sees the container, the name says
# which use of it the file is (a .docx is a zip, an .m4a is an MPEG-4 file).
_CONTAINERS = (
    frozenset({"application/zip", "application/x-zip-compressed"}),
    frozenset({"video/mp4", "audio/mp4", "video/quicktime", "video/3gpp", "audio/x-m4a"}),
    frozenset({"application/ogg", "audio/ogg", "video/ogg", "audio/opus"}),
    frozenset({"video/x-matroska", "video/webm", "audio/webm", "audio/x-matroska"}),
)
_ZIP_BASED = re.compile(
    r"^application/(vnd\.openxmlformats-officedocument\..*|vnd\.oasis\.opendocument\..*|epub\+zip|java-archive|vnd\.android\.package-archive)$"
)


def _family(mime_type: str) -> frozenset[str] | str:
    if mime_type.startswith("text/"):
        return "text"
    if _ZIP_BASED.match(mime_type):
        return _CONTAINERS[0]
    for container in _CONTAINERS:
        if mime_type in container:
            return container
    return mime_type


def detect(head: bytes, name: str | None, *, sniffed: str | None = None) -> tuple[str, str]:
    """(MIME type, extension without the dot) for a blob whose first bytes are `head` (and which the
    sniffer, if already asked, called `sniffed`).

    The bytes decide, and the name refines: when the sniffer has nothing specific to say, or when the
    name's type is of the same family (both text, or uses of one container), the name's type is taken.
    A name never makes bytes active content (markup, scripts) that the sniffer did not see as such."""
    if sniffed is None:
        sniffed = sniff(head[:SNIFF_BYTES])
    by_name = type_from_name(name)
    mime_type = sniffed
    if by_name is not None and (sniffed in GENERIC_TYPES or _family(sniffed) == _family(by_name)):
        if by_name == sniffed or not is_active(by_name):
            mime_type = by_name
    return mime_type, extension_for(mime_type)


def is_active(mime_type: str) -> bool:
    """Content a browser would run (scripts, markup) if served as a document from our origin."""
    base = mime_type.split(";", 1)[0].strip().lower()
    return base in ACTIVE_TYPES or base.endswith("+xml")
