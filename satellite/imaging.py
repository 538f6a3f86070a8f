"""Images as the server processes them: what a stored one is (type, size and blurhash, for NIP-94's `dim`
and `blurhash`), and a clean copy of an upload for Blossom's `PUT /media` (BUD-05).

Synchronous and self-contained: no network, no database. It runs in a worker process
(`satellite.image_worker`), which bounds its time and memory; the limits here bound what is decoded at all.

A clean copy is always decoded and encoded anew, never edited in place: every byte of it comes from the
encoder, so nothing the decoder did not understand (metadata, trailing data, a second picture, a payload
after the end marker) survives. Along the way the EXIF orientation is applied to the pixels, an embedded
colour profile is converted to sRGB (then dropped), and images with a longer edge than `max_edge` are
scaled down. The format stays the same: JPEG (quality 85, progressive), PNG (optimised), WebP (lossless
stays lossless, lossy at quality 85), GIF; animated GIF, WebP and PNG stay animated, with every frame and
its duration.
"""

from __future__ import annotations

import io
import math
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import ExifTags, Image, ImageCms, ImageFile
from PIL.GifImagePlugin import GifImageFile
from PIL.JpegImagePlugin import JpegImageFile
from PIL.PngImagePlugin import PngImageFile
from PIL.WebPImagePlugin import WebPImageFile

from satellite.errors import UnprocessableMedia, UnsupportedMedia
from satellite.media_type import SNIFF_BYTES, sniff

IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/webp", "image/gif"})

# Each type is opened by its own decoder only: bytes are never handed to whichever Pillow decoder accepts
# them.
_DECODERS: dict[str, type[ImageFile.ImageFile]] = {
    "image/jpeg": JpegImageFile,
    "image/png": PngImageFile,
    "image/webp": WebPImageFile,
    "image/gif": GifImageFile,
}
_FORMATS = {"image/jpeg": "JPEG", "image/png": "PNG", "image/webp": "WEBP", "image/gif": "GIF"}
_QUALITY = 85

# EXIF orientation -> the transposition that shows the picture upright (as `ImageOps.exif_transpose`).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SIDEWAYS = frozenset({5, 6, 7, 8})  # orientations that swap width and height

# Decoders fail on bad input with any of these (Pillow's own list, and zlib's for PNG).
_BROKEN = (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError, zlib.error)


@dataclass(frozen=True, slots=True)
class ImageLimits:
    max_pixels: int = 50_000_000  # width x height: refused from the header, before any decoding
    max_frames: int = 1000  # frames of an animation
    max_animation_pixels: int = 200_000_000  # width x height x frames: what cleaning an animation holds
    max_edge: int = 2560  # a clean copy's longer edge is at most this many pixels

    def __post_init__(self) -> None:
        if min(self.max_pixels, self.max_frames, self.max_animation_pixels, self.max_edge) < 1:
            raise ValueError("image limits must be positive")


@dataclass(frozen=True, slots=True)
class ImageFacts:
    mime_type: str
    width: int  # as shown: after the EXIF orientation is applied
    height: int
    blurhash: str


@dataclass(frozen=True, slots=True)
class Cleaned:
    path: Path
    mime_type: str
    facts: ImageFacts


def describe(path: Path, limits: ImageLimits) -> ImageFacts | None:
    """Type, size as shown and blurhash of a stored image; None for anything that is not one of
    IMAGE_TYPES or that cannot be decoded within the limits. Never raises for a bad image."""
    try:
        with _opened(path, limits) as (image, mime_type):
            orientation = _orientation(image)
            width, height = image.size
            image.draft("RGB", (_THUMBNAIL * 2, _THUMBNAIL * 2))  # JPEG: decode at up to 1/8 scale
            thumbnail = _thumbnail(image)
            if orientation != 1:
                thumbnail = thumbnail.transpose(_UPRIGHT[orientation])
    except (UnsupportedMedia, UnprocessableMedia):
        return None
    if orientation in _SIDEWAYS:
        width, height = height, width
    return ImageFacts(mime_type, width, height, _blurhash_of(thumbnail, width, height))


def clean(src: Path, dest: Path, limits: ImageLimits) -> Cleaned:
    """Write to `dest` a copy of the image at `src` without any metadata, upright, at most `max_edge`
    pixels on its longer side, in the same format. Raises UnsupportedMedia for anything but IMAGE_TYPES,
    UnprocessableMedia for an image over the limits or one that does not decode."""
    with _opened(src, limits) as (image, mime_type):
        frames, durations = _frames(image, mime_type, limits)
        options = _save_options(image, mime_type, src, frames, durations)
    try:
        frames[0].save(dest, _FORMATS[mime_type], **options)
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    facts = describe(dest, limits)  # of the bytes written, so that describing the copy later agrees
    if facts is None:
        dest.unlink(missing_ok=True)
        raise UnprocessableMedia("the image could not be encoded again")
    return Cleaned(dest, mime_type, facts)


@contextmanager
def _opened(path: Path, limits: ImageLimits) -> Iterator[tuple[ImageFile.ImageFile, str]]:
    """The image at `path`, opened (header read, nothing decoded) by the decoder of its sniffed type,
    refused if its header declares more than `max_pixels`. Decoding errors inside become
    UnprocessableMedia."""
    with path.open("rb") as file:
        mime_type = sniff(file.read(SNIFF_BYTES))
        if mime_type not in IMAGE_TYPES:
            raise UnsupportedMedia(
                f"{mime_type} is not an image type that is processed: send JPEG, PNG, WebP or GIF"
            )
        file.seek(0)
        with _pillow_errors(limits):
            image = _DECODERS[mime_type](file)
            width, height = image.size
            if width * height > limits.max_pixels:
                limit = limits.max_pixels
                raise UnprocessableMedia(
                    f"the image is {width} × {height} pixels; at most {limit} pixels are processed"
                )
            try:
                yield image, mime_type
            finally:
                image.close()


@contextmanager
def _pillow_errors(limits: ImageLimits) -> Iterator[None]:
    """Pillow's failures as UnprocessableMedia. Pillow's own decompression-bomb guard is set to
    `max_pixels` too (its warning made an error), for what the header check cannot see: an animation
    frame that grows the canvas."""
    Image.MAX_IMAGE_PIXELS = limits.max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UnprocessableMedia(
            f"the image is larger than {limits.max_pixels} pixels, the most that are processed"
        ) from exc
    except MemoryError as exc:
        raise UnprocessableMedia("the image needs more memory to decode than processing may use") from exc
    except _BROKEN as exc:
        raise UnprocessableMedia(f"the image is truncated or corrupt ({_said(exc)})") from exc


def _said(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation, 1 (upright) when absent or nonsense. Metadata that does not parse is not a
    reason to refuse a picture: it is dropped anyway."""
    try:
        value = image.getexif().get(ExifTags.Base.Orientation, 1)
    except _BROKEN:
        return 1
    return value if isinstance(value, int) and value in _UPRIGHT else 1


def _frames(
    image: ImageFile.ImageFile, mime_type: str, limits: ImageLimits
) -> tuple[list[Image.Image], list[float]]:
    """Every frame, decoded, in sRGB, scaled to fit `max_edge`, upright, with no metadata left in `info`
    (the encoders read it from there); and each frame's duration in milliseconds."""
    count = int(getattr(image, "n_frames", 1))
    width, height = image.size
    if count > limits.max_frames:
        raise UnprocessableMedia(f"the image has {count} frames; at most {limits.max_frames} are processed")
    if count * width * height > limits.max_animation_pixels:
        raise UnprocessableMedia(
            f"the animation is {count} frames of {width} × {height} pixels; at most "
            f"{limits.max_animation_pixels} pixels in all frames are processed"
        )
    orientation = _orientation(image)
    icc_profile = image.info.get("icc_profile")
    target = _fit(image.size, limits.max_edge)
    if target != image.size:
        image.draft(None, target)  # JPEG: decode at a reduced scale that is still at least the target size
    frames: list[Image.Image] = []
    durations: list[float] = []
    for index in range(count):
        image.seek(index)
        image.load()
        frame = _pixels(image, mime_type, icc_profile, keep_palette=count == 1 and target == image.size)
        if frame.size != target:
            frame = frame.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
        if orientation != 1:
            frame = frame.transpose(_UPRIGHT[orientation])
        transparency = frame.info.get("transparency") if frame.mode in ("P", "L", "RGB") else None
        frame.info = {} if transparency is None else {"transparency": transparency}
        frames.append(frame)
        durations.append(float(image.info.get("duration") or 0))
    return frames, durations


def _fit(size: tuple[int, int], max_edge: int) -> tuple[int, int]:
    width, height = size
    if max(width, height) <= max_edge:
        return size
    scale = max_edge / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "La", "RGBa"})


def _pixels(frame: Image.Image, mime_type: str, icc_profile: Any, *, keep_palette: bool) -> Image.Image:
    """One frame in a mode its format writes and scaling handles, converted to sRGB from its profile."""
    alpha = frame.mode in _ALPHA_MODES or "transparency" in frame.info
    if frame.mode.startswith("I;16"):
        frame = _eight_bit(frame)
    if frame.mode in ("P", "1") and keep_palette and mime_type in ("image/png", "image/gif"):
        return frame.copy()  # nothing to scale: the palette (and its transparency) is kept as it is
    if frame.mode == "CMYK" or (icc_profile and frame.mode in ("RGB", "RGBA")):
        return _srgb(frame, icc_profile, "RGBA" if alpha and mime_type != "image/jpeg" else "RGB")
    if frame.mode in ("L", "LA", "1"):  # (JPEG has no LA to give)
        return frame.convert(
            "LA" if "transparency" in frame.info else "L" if frame.mode == "1" else frame.mode
        )
    if mime_type == "image/jpeg" or not alpha:
        return frame.convert("RGB")
    return frame.convert("RGBA")


def _eight_bit(frame: Image.Image) -> Image.Image:
    """16-bit greyscale scaled to 8 bits (Pillow's own conversion clips instead)."""
    return frame.convert("I").point(lambda value: value / 257).convert("L")


def _srgb(frame: Image.Image, icc_profile: Any, mode: str) -> Image.Image:
    if isinstance(icc_profile, bytes) and icc_profile:
        try:
            converted = ImageCms.profileToProfile(
                frame,
                ImageCms.ImageCmsProfile(io.BytesIO(icc_profile)),
                _SRGB_PROFILE,
                outputMode=mode,
            )
        except (ImageCms.PyCMSError, *_BROKEN):
            pass  # a profile that does not parse: the pixels are taken as sRGB already
        else:
            if converted is not None:
                return converted
    return frame.convert(mode)


_SRGB_PROFILE = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def _save_options(
    image: ImageFile.ImageFile,
    mime_type: str,
    src: Path,
    frames: list[Image.Image],
    durations: list[float],
) -> dict[str, Any]:
    """The encoder's options. No metadata among them, and none left in the frames' `info` (where the
    encoders would look for it)."""
    options: dict[str, Any]
    if mime_type == "image/jpeg":
        options = {"quality": _QUALITY, "progressive": True, "optimize": True}
    elif mime_type == "image/webp":
        lossless = _webp_lossless(src)  # for lossless, quality is the effort spent compressing
        options = {"lossless": lossless, "quality": 80 if lossless else _QUALITY, "method": 4}
    else:
        options = {"optimize": True}
    if len(frames) > 1:
        options.update(save_all=True, append_images=frames[1:], duration=durations)
        loop = image.info.get("loop")
        if isinstance(loop, int):
            options["loop"] = loop
        if mime_type == "image/gif" and any(frame.mode == "RGBA" for frame in frames):
            options["disposal"] = 2  # each frame drawn on a cleared canvas: its transparency stays
    return options


def _webp_lossless(path: Path) -> bool:
    """Whether a WebP file's picture (or first frame) is lossless: its first image chunk is VP8L."""
    with path.open("rb") as file:
        data = file.read(SNIFF_BYTES)
    offset = 12
    while offset + 8 <= len(data):
        kind, size = data[offset : offset + 4], int.from_bytes(data[offset + 4 : offset + 8], "little")
        if kind in (b"VP8 ", b"VP8L"):
            return kind == b"VP8L"
        if kind == b"ANMF":  # a frame: its header (16 bytes), then its own chunks
            offset += 8 + 16
            continue
        offset += 8 + size + (size & 1)
    return False


# Blurhash (https://github.com/woltapp/blurhash), encoded here over a 32 x 32 thumbnail of the image:
# some 50,000 multiplications (a few milliseconds), so no dependency for it. Four components along the
# longer side, three along the shorter: 28 characters.
_THUMBNAIL = 32
_BASE83 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz#$%*+,-.:;=?@[]^_{|}~"


def _thumbnail(image: Image.Image) -> Image.Image:
    """The image as RGB on a white background (blurhash has no alpha), 32 x 32 pixels."""
    if image.mode.startswith("I;16"):
        image = _eight_bit(image)
    size = (_THUMBNAIL, _THUMBNAIL)
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        small = (image if image.mode == "RGBA" else image.convert("RGBA")).resize(size, Image.Resampling.BOX)
        flat = Image.new("RGB", size, (255, 255, 255))
        flat.paste(small, mask=small.getchannel("A"))
        return flat
    return (image if image.mode == "RGB" else image.convert("RGB")).resize(size, Image.Resampling.BOX)


def _blurhash_of(thumbnail: Image.Image, width: int, height: int) -> str:
    x, y = (4, 3) if width >= height else (3, 4)
    return encode_blurhash(thumbnail.tobytes(), thumbnail.width, thumbnail.height, x, y)


def _srgb_to_linear(value: int) -> float:
    v = value / 255.0
    return v / 12.92 if v <= 0.04045 else math.pow((v + 0.055) / 1.055, 2.4)


_LINEAR = [_srgb_to_linear(value) for value in range(256)]


def _linear_to_srgb(value: float) -> int:
    v = max(0.0, min(1.0, value))
    if v <= 0.0031308:
        return int(v * 12.92 * 255 + 0.5)
    return int((1.055 * math.pow(v, 1 / 2.4) - 0.055) * 255 + 0.5)


def _base83(value: int, length: int) -> str:
    return "".join(_BASE83[value // 83 ** (length - i) % 83] for i in range(1, length + 1))


def encode_blurhash(
    rgb: bytes, width: int, height: int, components_x: int, components_y: int, *, offset: float = 0.5
) -> str:
    """The blurhash of `width` x `height` RGB pixels (8 bits each, row by row).

    Each pixel is taken at its centre (`offset` 0.5), so that a picture of one colour has no other
    component and decodes to exactly that colour; offset 0 takes it at its corner, as the reference
    encoder does (whose hashes are then the same, character for character)."""
    if not (1 <= components_x <= 9 and 1 <= components_y <= 9) or len(rgb) != width * height * 3:
        raise ValueError("blurhash: 1 to 9 components each way, and 3 bytes for each pixel")
    linear = [_LINEAR[value] for value in rgb]
    cos_x = [
        [math.cos(math.pi * i * (x + offset) / width) for x in range(width)] for i in range(components_x)
    ]
    cos_y = [
        [math.cos(math.pi * j * (y + offset) / height) for y in range(height)] for j in range(components_y)
    ]
    factors: list[tuple[float, float, float]] = []
    for j in range(components_y):
        for i in range(components_x):
            norm = 1.0 if i == j == 0 else 2.0
            r = g = b = 0.0
            for y in range(height):
                row, weight_y = y * width * 3, cos_y[j][y]
                for x in range(width):
                    basis = norm * cos_x[i][x] * weight_y
                    at = row + x * 3
                    r += basis * linear[at]
                    g += basis * linear[at + 1]
                    b += basis * linear[at + 2]
            scale = width * height
            factors.append((r / scale, g / scale, b / scale))
    dc, ac = factors[0], factors[1:]
    maximum = max((abs(c) for factor in ac for c in factor), default=0.0)
    quantised = int(max(0, min(82, math.floor(maximum * 166 - 0.5)))) if ac else 0
    ac_max = (quantised + 1) / 166.0

    def quantise(c: float) -> int:
        return int(max(0.0, min(18.0, math.floor(math.copysign(abs(c / ac_max) ** 0.5, c) * 9.0 + 9.5))))

    parts = [_base83((components_x - 1) + (components_y - 1) * 9, 1), _base83(quantised, 1)]
    parts.append(
        _base83((_linear_to_srgb(dc[0]) << 16) + (_linear_to_srgb(dc[1]) << 8) + _linear_to_srgb(dc[2]), 4)
    )
    parts.extend(_base83(quantise(r) * 361 + quantise(g) * 19 + quantise(b), 2) for r, g, b in ac)
    return "".join(parts)
