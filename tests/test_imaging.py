"""Image processing for `PUT /media` and NIP-94's `dim`/`blurhash`: a clean copy keeps the picture (upright,
scaled, animated) and loses every piece of metadata; limits refuse bombs before decoding; the worker
bounds the time of each job and recovers from a job killed or stuck."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import struct
import zlib
from pathlib import Path

import blurhash as reference_blurhash
import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from image_jobs import announce_then_wait, fail_unexpectedly
from PIL import ExifTags, Image, ImageCms, PngImagePlugin

from satellite.errors import UnprocessableMedia, UnsupportedMedia
from satellite.image_worker import ImageWorker
from satellite.imaging import IMAGE_TYPES, ImageLimits, clean, describe, encode_blurhash

LIMITS = ImageLimits()
RED, BLUE, GREEN = (220, 20, 30), (20, 40, 220), (30, 200, 40)
SECRET = "Camera of Alice, 48.8566 N 2.3522 E"
XMP = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    b'<rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/" dc:creator="Alice"/></rdf:RDF></x:xmpmeta>'
)
FORMAT_OF = {"image/jpeg": "JPEG", "image/png": "PNG", "image/webp": "WEBP", "image/gif": "GIF"}


def gps_exif(orientation: int = 1) -> Image.Exif:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    exif[ExifTags.Base.Model] = SECRET
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (48.0, 51.0, 23.76)
    gps[ExifTags.GPS.GPSLongitudeRef] = "E"
    gps[ExifTags.GPS.GPSLongitude] = (2.0, 21.0, 7.92)
    return exif


def marked(size: tuple[int, int], mode: str = "RGB") -> Image.Image:
    """Red, with a blue block in the top-left third: where that block ends up shows the orientation."""
    image = Image.new("RGB", size, RED)
    image.paste(BLUE, (0, 0, max(1, size[0] // 3), max(1, size[1] // 3)))
    return image.convert(mode)


def write(tmp_path: Path, name: str, image: Image.Image, fmt: str, **options) -> Path:
    path = tmp_path / name
    image.save(path, fmt, **options)
    return path


def close_to(a: tuple[int, ...], b: tuple[int, ...], within: int = 40) -> bool:
    return all(abs(x - y) <= within for x, y in zip(a, b, strict=False))


def opened(path: Path) -> Image.Image:
    """The image at `path` (its first frame), read into memory; the file is closed again."""
    with Image.open(path) as image:
        image.load()
        copy = image.copy()
        copy.format = image.format
        return copy


def frames_of(path: Path) -> list[tuple[Image.Image, int]]:
    with Image.open(path) as image:
        result = []
        for index in range(getattr(image, "n_frames", 1)):
            image.seek(index)
            result.append((image.convert("RGB"), image.info.get("duration", 0)))
        return result


def png_chunks(data: bytes) -> list[bytes]:
    kinds, offset = [], 8
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kinds.append(data[offset + 4 : offset + 8])
        offset += 12 + length
    return kinds


def riff_chunks(data: bytes) -> list[bytes]:
    kinds, offset = [], 12
    while offset + 8 <= len(data):
        kind, size = data[offset : offset + 4], int.from_bytes(data[offset + 4 : offset + 8], "little")
        kinds.append(kind)
        offset += 8 + size + (size & 1)
    return kinds


def assert_no_metadata(data: bytes) -> None:
    for marker in (
        b"Exif",
        b"http://ns.adobe.com/xap/1.0/",
        b"xmpmeta",
        SECRET.encode(),
        b"Alice",
        b"ICC_PROFILE",
    ):
        assert marker not in data, marker


# --- what a clean copy keeps and loses ---------------------------------------------------------------


def test_a_jpeg_loses_gps_xmp_and_comment_and_is_turned_upright(tmp_path):
    stored = marked((90, 60))  # landscape as stored; orientation 6: shown turned a quarter clockwise
    src = write(tmp_path, "photo.jpg", stored, "JPEG", exif=gps_exif(6), xmp=XMP, comment=SECRET, quality=95)
    assert SECRET.encode() in src.read_bytes() and b"xmpmeta" in src.read_bytes()

    result = clean(src, tmp_path / "clean.jpg", LIMITS)

    data = result.path.read_bytes()
    assert_no_metadata(data)
    with Image.open(result.path) as image:
        assert image.format == "JPEG"
        assert dict(image.getexif()) == {}
        assert ExifTags.IFD.GPSInfo not in image.getexif()
        assert not {"exif", "xmp", "comment", "icc_profile"} & set(image.info)
        assert image.size == (60, 90)  # upright: portrait
        upright = image.convert("RGB")
    # The block that was top-left as stored is top-right when shown.
    assert close_to(upright.getpixel((50, 10)), BLUE)
    assert close_to(upright.getpixel((10, 10)), RED)
    assert close_to(upright.getpixel((50, 80)), RED)
    assert (result.mime_type, result.facts.width, result.facts.height) == ("image/jpeg", 60, 90)
    # And the size reported for the original is the size it is shown at.
    facts = describe(src, LIMITS)
    assert facts is not None and (facts.width, facts.height) == (60, 90)


# Where the stored top-left corner is shown, for each EXIF orientation (TIFF 6.0 / EXIF 2.3).
SHOWN_CORNER = {1: "TL", 2: "TR", 3: "BR", 4: "BL", 5: "TL", 6: "TR", 7: "BR", 8: "BL"}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    orientation=st.integers(1, 8),
    width=st.integers(24, 200),
    height=st.integers(24, 200),
    mime_type=st.sampled_from(["image/jpeg", "image/png", "image/webp"]),
)
def test_every_orientation_is_applied_to_the_pixels(tmp_path, orientation, width, height, mime_type):
    src = write(tmp_path, "src", marked((width, height)), FORMAT_OF[mime_type], exif=gps_exif(orientation))
    result = clean(src, tmp_path / "out", LIMITS)

    shown = opened(result.path).convert("RGB")
    sideways = orientation >= 5
    assert shown.size == ((height, width) if sideways else (width, height))
    assert (result.facts.width, result.facts.height) == shown.size
    w, h = shown.size
    corners = {"TL": (w // 8, h // 8), "TR": (w - 1 - w // 8, h // 8)}
    corners |= {"BL": (w // 8, h - 1 - h // 8), "BR": (w - 1 - w // 8, h - 1 - h // 8)}
    for corner, xy in corners.items():
        expected = BLUE if corner == SHOWN_CORNER[orientation] else RED
        assert close_to(shown.getpixel(xy), expected), (corner, shown.getpixel(xy))
    assert_no_metadata(result.path.read_bytes())


def test_a_png_loses_its_text_exif_and_profile_chunks_and_keeps_its_pixels(tmp_path):
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", SECRET)
    info.add_text("Author", "Alice", zip=True)
    info.add_itxt("Description", SECRET, lang="en", tkey="Beschreibung")
    info.add_itxt("XML:com.adobe.xmp", XMP.decode())
    picture = marked((64, 48), "RGBA")
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    src = write(tmp_path, "a.png", picture, "PNG", pnginfo=info, exif=gps_exif(), icc_profile=profile)
    assert {b"tEXt", b"zTXt", b"iTXt", b"eXIf", b"iCCP"} <= set(png_chunks(src.read_bytes()))

    result = clean(src, tmp_path / "clean.png", LIMITS)

    data = result.path.read_bytes()
    assert set(png_chunks(data)) <= {b"IHDR", b"PLTE", b"tRNS", b"IDAT", b"IEND"}
    assert_no_metadata(data)
    with Image.open(result.path) as image:
        assert image.format == "PNG" and dict(image.getexif()) == {} and not getattr(image, "text", {})
        assert image.convert("RGBA").tobytes() == picture.tobytes()  # PNG is lossless: the same pixels


def test_a_palette_png_keeps_its_transparency(tmp_path):
    picture = Image.new("P", (20, 20), 1)
    picture.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    picture.paste(0, (0, 0, 10, 20))
    src = write(tmp_path, "p.png", picture, "PNG", transparency=0)
    result = clean(src, tmp_path / "out.png", LIMITS)
    shown = opened(result.path).convert("RGBA")
    assert shown.getpixel((2, 2))[3] == 0 and shown.getpixel((15, 2)) == (255, 0, 0, 255)


def test_a_webp_loses_its_exif_xmp_and_profile(tmp_path):
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    src = write(tmp_path, "a.webp", marked((80, 50)), "WEBP", exif=gps_exif(), xmp=XMP, icc_profile=profile)
    assert {b"EXIF", b"XMP ", b"ICCP"} <= set(riff_chunks(src.read_bytes()))

    result = clean(src, tmp_path / "clean.webp", LIMITS)

    data = result.path.read_bytes()
    assert not {b"EXIF", b"XMP ", b"ICCP"} & set(riff_chunks(data))
    assert_no_metadata(data)
    with Image.open(result.path) as image:
        assert image.format == "WEBP" and dict(image.getexif()) == {}
        assert close_to(image.convert("RGB").getpixel((70, 40)), RED)


def test_a_lossless_webp_stays_lossless(tmp_path):
    picture = Image.effect_noise((40, 30), 80).convert("RGB")
    src = write(tmp_path, "a.webp", picture, "WEBP", lossless=True, exif=gps_exif())
    result = clean(src, tmp_path / "out.webp", LIMITS)
    assert opened(result.path).convert("RGB").tobytes() == picture.tobytes()


def swapped_primaries_profile() -> bytes:
    """The sRGB profile with its red and blue primaries exchanged: pixels tagged with it that say red
    are shown blue."""
    data = bytearray(SRGB.tobytes())
    (count,) = struct.unpack(">I", data[128:132])
    entries = {bytes(data[132 + 12 * i : 136 + 12 * i]): 132 + 12 * i for i in range(count)}
    red, blue = entries[b"rXYZ"], entries[b"bXYZ"]
    data[red + 4 : red + 12], data[blue + 4 : blue + 12] = (
        data[blue + 4 : blue + 12],
        data[red + 4 : red + 12],
    )
    return bytes(data)


SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_an_embedded_colour_profile_is_applied_to_the_pixels_not_just_dropped(tmp_path, fmt):
    profile = swapped_primaries_profile()
    picture = Image.new("RGB", (32, 32), RED)
    src = write(
        tmp_path, "a", picture, fmt, icc_profile=profile, **({"quality": 100} if fmt != "PNG" else {})
    )
    as_shown = ImageCms.profileToProfile(picture, ImageCms.ImageCmsProfile(io.BytesIO(profile)), SRGB)
    assert as_shown is not None and as_shown.getpixel((16, 16))[2] > 150  # a viewer shows it blue

    result = clean(src, tmp_path / "out", LIMITS)

    shown = opened(result.path)
    assert "icc_profile" not in shown.info
    assert close_to(shown.convert("RGB").getpixel((16, 16)), as_shown.getpixel((16, 16)), within=8)


@pytest.mark.parametrize("mime_type", ["image/gif", "image/webp", "image/png"])
def test_an_animation_keeps_every_frame_and_its_timing(tmp_path, mime_type):
    colours = [RED, GREEN, BLUE]
    frames = [Image.new("RGB", (40, 30), colour) for colour in colours]
    options = {"save_all": True, "append_images": frames[1:], "duration": [100, 200, 300], "loop": 0}
    if mime_type == "image/gif":
        options["comment"] = SECRET.encode()
    else:
        options["exif"] = gps_exif()
    src = write(tmp_path, "anim", frames[0], FORMAT_OF[mime_type], **options)

    result = clean(src, tmp_path / "out", LIMITS)

    assert result.mime_type == mime_type
    shown = frames_of(result.path)
    assert len(shown) == 3
    for (frame, duration), colour, want in zip(shown, colours, [100, 200, 300], strict=True):
        assert close_to(frame.getpixel((20, 15)), colour)
        assert duration == want
    assert_no_metadata(result.path.read_bytes())
    with Image.open(result.path) as image:
        assert image.info.get("loop") == 0 and "comment" not in image.info


def test_a_transparent_animated_gif_stays_transparent(tmp_path):
    frames = []
    for x in (0, 20):
        frame = Image.new("RGBA", (40, 20), (0, 0, 0, 0))
        frame.paste((255, 0, 0, 255), (x, 0, x + 20, 20))
        frames.append(frame)
    options = {"save_all": True, "append_images": frames[1:], "duration": 50, "disposal": 2}
    src = write(tmp_path, "a.gif", frames[0], "GIF", **options)  # each frame on a cleared canvas
    result = clean(src, tmp_path / "out.gif", LIMITS)
    with Image.open(result.path) as image:
        image.seek(1)
        second = image.convert("RGBA")
    assert second.getpixel((5, 5))[3] == 0  # what the first frame drew there is gone
    assert second.getpixel((30, 5)) == (255, 0, 0, 255)


@pytest.mark.parametrize(("size", "expected"), [((6000, 4000), (2560, 1707)), ((4000, 6000), (1707, 2560))])
@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_a_large_image_is_scaled_to_the_longest_edge_allowed_keeping_its_aspect(
    tmp_path, size, expected, fmt
):
    src = write(tmp_path, "big", marked(size), fmt)
    result = clean(src, tmp_path / "out", LIMITS)
    shown = opened(result.path)
    assert shown.size == expected == (result.facts.width, result.facts.height)
    assert close_to(shown.convert("RGB").getpixel((expected[0] // 8, expected[1] // 8)), BLUE)


MODES = {
    "image/jpeg": ["RGB", "L", "CMYK"],
    "image/png": ["RGB", "RGBA", "L", "LA", "P", "1", "I;16"],
    "image/webp": ["RGB", "RGBA"],
    "image/gif": ["P", "L"],
}


@st.composite
def images(draw):
    mime_type = draw(st.sampled_from(sorted(IMAGE_TYPES)))
    mode = draw(st.sampled_from(MODES[mime_type]))
    size = (draw(st.integers(1, 120)), draw(st.integers(1, 120)))
    return mime_type, mode, size, draw(st.integers(1, 8))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=images(), max_edge=st.integers(8, 160))
def test_any_image_comes_out_clean_in_its_own_format_within_the_edge(tmp_path, case, max_edge):
    mime_type, mode, size, orientation = case
    picture = Image.effect_noise(size, 50).convert(mode) if mode != "I;16" else Image.new(mode, size, 30000)
    extra = {} if mime_type == "image/gif" else {"exif": gps_exif(orientation)}
    src = write(tmp_path, "src", picture, FORMAT_OF[mime_type], **extra)

    result = clean(src, tmp_path / "out", ImageLimits(max_edge=max_edge))

    shown = opened(result.path)
    assert shown.format == FORMAT_OF[mime_type] and result.mime_type == mime_type
    assert max(shown.size) <= max_edge and shown.size == (result.facts.width, result.facts.height)
    assert dict(shown.getexif()) == {}
    assert_no_metadata(result.path.read_bytes())
    assert describe(result.path, LIMITS) == result.facts


# --- what is refused, and why ------------------------------------------------------------------------


def png_declaring(width: int, height: int, bit_depth: int = 1, colour_type: int = 0) -> bytes:
    """A PNG whose header declares `width` x `height` pixels, with a little data after it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 100_000)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


async def test_a_decompression_bomb_is_refused_from_its_header_without_decoding(tmp_path):
    src = tmp_path / "bomb.png"
    src.write_bytes(png_declaring(60000, 60000))  # 3.6 gigapixels, in 300 bytes

    with pytest.raises(UnprocessableMedia) as refused:
        clean(src, tmp_path / "out.png", LIMITS)
    assert refused.value.reason == "the image is 60000 × 60000 pixels; at most 50000000 pixels are processed"
    assert not (tmp_path / "out.png").exists()
    assert describe(src, LIMITS) is None

    # In a worker that may use far less memory than the decoded image would need, the answer is the same.
    worker = ImageWorker(LIMITS, memory_limit_bytes=512 * 1024**2)
    try:
        with pytest.raises(UnprocessableMedia, match="60000 × 60000 pixels"):
            await worker.clean(src, tmp_path / "out.png")
    finally:
        await worker.aclose()


def test_a_gif_frame_larger_than_its_canvas_is_held_to_the_same_limit(tmp_path):
    # A 10 x 10 canvas whose first frame claims 2000 x 2000: Pillow grows the canvas, and its own
    # decompression-bomb guard, set to our limit, refuses it.
    header = b"GIF89a" + struct.pack("<HHBBB", 10, 10, 0, 0, 0)
    frame = b"," + struct.pack("<HHHHB", 0, 0, 2000, 2000, 0) + b"\x02\x02\x4c\x01\x00;"
    src = tmp_path / "grow.gif"
    src.write_bytes(header + frame)
    with pytest.raises(UnprocessableMedia, match="larger than 1000000 pixels"):
        clean(src, tmp_path / "out.gif", ImageLimits(max_pixels=1_000_000))
    assert describe(src, ImageLimits(max_pixels=1_000_000)) is None


def test_too_many_frames_and_too_much_animation_are_refused(tmp_path):
    frames = [Image.new("RGB", (30, 20), (i * 40, 0, 0)) for i in range(5)]
    src = write(tmp_path, "a.gif", frames[0], "GIF", save_all=True, append_images=frames[1:])
    with pytest.raises(UnprocessableMedia) as refused:
        clean(src, tmp_path / "out.gif", ImageLimits(max_frames=3))
    assert refused.value.reason == "the image has 5 frames; at most 3 are processed"
    with pytest.raises(UnprocessableMedia) as refused:
        clean(src, tmp_path / "out.gif", ImageLimits(max_animation_pixels=2000))
    assert refused.value.reason == (
        "the animation is 5 frames of 30 × 20 pixels; at most 2000 pixels in all frames are processed"
    )
    assert describe(src, ImageLimits(max_frames=3)) is not None  # describing reads one frame


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF"])
def test_a_truncated_image_is_unprocessable(tmp_path, fmt):
    whole = io.BytesIO()
    Image.effect_noise((200, 150), 60).convert("RGB" if fmt != "GIF" else "L").save(whole, fmt)
    src = tmp_path / "cut"
    src.write_bytes(whole.getvalue()[: len(whole.getvalue()) // 2])
    with pytest.raises(UnprocessableMedia, match=r"^the image is truncated or corrupt"):
        clean(src, tmp_path / "out", LIMITS)
    assert not (tmp_path / "out").exists()
    assert describe(src, LIMITS) is None


@pytest.mark.parametrize(
    ("data", "named"),
    [
        (
            b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n",
            "application/pdf",
        ),
        (b"\x00\x01\x02\xff" * 300, "application/octet-stream"),
        (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"></svg>', "image/svg+xml"),
        (b"", "application/octet-stream"),
    ],
)
def test_what_is_not_an_image_we_process_is_unsupported_and_named(tmp_path, data, named):
    src = tmp_path / "upload"
    src.write_bytes(data)
    with pytest.raises(UnsupportedMedia) as refused:
        clean(src, tmp_path / "out", LIMITS)
    assert refused.value.reason.startswith(f"{named} is not an image type that is processed")
    assert describe(src, LIMITS) is None


def test_other_image_formats_are_unsupported_by_name(tmp_path):
    src = write(tmp_path, "a.bmp", marked((10, 10)), "BMP")
    with pytest.raises(UnsupportedMedia, match=r"^image/bmp is not"):
        clean(src, tmp_path / "out", LIMITS)


# --- describe and blurhash ---------------------------------------------------------------------------


@pytest.mark.parametrize("mime_type", sorted(IMAGE_TYPES))
@pytest.mark.parametrize(("size", "components"), [((120, 80), (4, 3)), ((80, 120), (3, 4))])
def test_describe_gives_the_size_and_a_blurhash_of_the_colour(tmp_path, mime_type, size, components):
    src = write(tmp_path, "solid", Image.new("RGB", size, GREEN), FORMAT_OF[mime_type])
    facts = describe(src, LIMITS)
    assert facts is not None
    assert (facts.mime_type, facts.width, facts.height) == (mime_type, *size)
    assert reference_blurhash.components(facts.blurhash) == components
    assert len(facts.blurhash) == 4 + 2 * components[0] * components[1]
    decoded = reference_blurhash.decode(facts.blurhash, 4, 4)
    assert all(close_to(tuple(pixel), GREEN, within=8) for row in decoded for pixel in row)


def test_describe_of_a_large_jpeg_gives_its_full_size(tmp_path):
    src = write(tmp_path, "big.jpg", marked((4000, 3000)), "JPEG")
    facts = describe(src, LIMITS)
    assert facts is not None and (facts.width, facts.height) == (4000, 3000)
    # The blurhash shows the blue corner: the top-left of the decoded hash is bluer than its bottom-right.
    decoded = reference_blurhash.decode(facts.blurhash, 8, 6)
    assert decoded[0][0][2] > decoded[5][7][2] + 60


@settings(max_examples=80, deadline=None)
@given(
    width=st.integers(1, 9),
    height=st.integers(1, 9),
    components=st.tuples(st.integers(1, 9), st.integers(1, 9)),
    data=st.data(),
)
def test_our_blurhash_is_that_of_an_independent_implementation(width, height, components, data):
    rgb = data.draw(st.binary(min_size=width * height * 3, max_size=width * height * 3))
    rows = [
        [list(rgb[(y * width + x) * 3 : (y * width + x) * 3 + 3]) for x in range(width)]
        for y in range(height)
    ]
    ours = encode_blurhash(rgb, width, height, *components, offset=0.0)  # the reference's sampling
    assert ours == reference_blurhash.encode(rows, *components)
    assert len(ours) == 4 + 2 * components[0] * components[1]


@given(colour=st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255)))
def test_the_blurhash_of_a_solid_colour_decodes_to_that_colour(colour):
    ours = encode_blurhash(bytes(colour) * 32 * 32, 32, 32, 4, 3)
    decoded = reference_blurhash.decode(ours, 8, 6)
    assert all(tuple(pixel) == colour for row in decoded for pixel in row)


# --- the worker: a time limit that holds, and recovery --------------------------------------------------


async def announced_pid(fifo: Path, job: asyncio.Future) -> int:
    """The pid that `announce_then_wait` writes to `fifo` once it runs in a worker. Should the job end
    first, its failure is raised here (and the reader let go)."""
    reading = asyncio.ensure_future(asyncio.to_thread(fifo.read_text))
    await asyncio.wait({reading, job}, return_when=asyncio.FIRST_COMPLETED)
    if not reading.done():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # the reader sees an empty write and returns
        await reading
        raise AssertionError(f"the job ended before it ran: {job.exception()!r}")
    return int(reading.result())


def gone(pid: int) -> bool:
    """Whether the process ends within a few seconds (it has been killed: it has no reason to linger)."""
    try:
        psutil.Process(pid).wait(timeout=10)
    except psutil.NoSuchProcess:
        return True
    except psutil.TimeoutExpired:
        return False
    return True


@pytest.fixture
async def worker():
    workers = []

    def make(**options) -> ImageWorker:
        workers.append(ImageWorker(LIMITS, **options))
        return workers[-1]

    yield make
    for each in workers:
        await each.aclose()


async def test_the_worker_describes_and_cleans(tmp_path, worker):
    images = worker()
    src = write(tmp_path, "a.jpg", marked((90, 60)), "JPEG", exif=gps_exif(6))
    facts = await images.describe(src)
    assert facts is not None and (facts.mime_type, facts.width, facts.height) == ("image/jpeg", 60, 90)
    result = await images.clean(src, tmp_path / "out.jpg")
    assert result.path == tmp_path / "out.jpg" and (result.facts.width, result.facts.height) == (60, 90)
    assert result.facts == await images.describe(result.path)
    assert await images.describe(tmp_path / "out.jpg") is not None
    (tmp_path / "doc.pdf").write_bytes(b"%PDF-1.4\n%%EOF\n")
    assert await images.describe(tmp_path / "doc.pdf") is None
    pids = images.worker_pids()
    with pytest.raises(UnsupportedMedia, match=r"^application/pdf is not"):
        await images.clean(tmp_path / "doc.pdf", tmp_path / "out.pdf")
    assert images.worker_pids() == pids  # a refusal is an answer: the worker goes on serving


async def test_a_job_over_the_time_limit_is_killed_and_the_next_one_runs(tmp_path, worker):
    images = worker(timeout_seconds=2.0)
    fifo = tmp_path / "started"
    os.mkfifo(fifo)
    job = asyncio.ensure_future(images.call(announce_then_wait, str(fifo)))
    pid = await announced_pid(fifo, job)
    with pytest.raises(UnprocessableMedia) as refused:
        await job
    assert refused.value.reason == "processing took longer than 2 s"
    assert gone(pid) and images.worker_pids() == []

    src = write(tmp_path, "a.png", marked((30, 20)), "PNG")
    result = await images.clean(src, tmp_path / "out.png")
    assert (result.facts.width, result.facts.height) == (30, 20)


async def test_a_real_image_over_the_time_limit_is_refused_and_describe_gives_nothing(tmp_path, worker):
    src = write(tmp_path, "big.jpg", Image.effect_noise((6000, 4000), 60).convert("RGB"), "JPEG")
    images = worker(timeout_seconds=0.05)
    with pytest.raises(UnprocessableMedia, match=r"^processing took longer than 0.05 s$"):
        await images.clean(src, tmp_path / "out.jpg")
    assert await images.describe(src) is None


async def test_a_worker_killed_mid_job_fails_that_job_only_and_the_next_one_runs(tmp_path, worker):
    images = worker()
    fifo = tmp_path / "started"
    os.mkfifo(fifo)
    job = asyncio.ensure_future(images.call(announce_then_wait, str(fifo)))
    pid = await announced_pid(fifo, job)
    assert images.worker_pids() == [pid]
    os.kill(pid, signal.SIGKILL)  # as the kernel's OOM killer would
    with pytest.raises(UnprocessableMedia, match=r"^processing stopped before it finished"):
        await job

    src = write(tmp_path, "a.webp", marked((30, 20)), "WEBP")
    assert (await images.clean(src, tmp_path / "out.webp")).facts.width == 30
    assert pid not in images.worker_pids()


async def test_a_stuck_job_does_not_hold_up_another_worker(tmp_path, worker):
    images = worker(timeout_seconds=30.0, processes=2)
    fifo = tmp_path / "started"
    os.mkfifo(fifo)
    stuck = asyncio.ensure_future(images.call(announce_then_wait, str(fifo)))
    stuck_pid = await announced_pid(fifo, stuck)
    src = write(tmp_path, "a.gif", marked((30, 20), "P"), "GIF")
    assert (await images.clean(src, tmp_path / "out.gif")).facts.height == 20
    assert not stuck.done()

    stuck.cancel()  # the request went away: its job is abandoned, and its process with it
    with pytest.raises(asyncio.CancelledError):
        await stuck
    assert gone(stuck_pid)


async def test_an_unexpected_failure_in_the_worker_is_unprocessable_and_the_next_job_runs(tmp_path, worker):
    images = worker()
    with pytest.raises(UnprocessableMedia, match=r"^the image could not be processed$"):
        await images.call(fail_unexpectedly)
    src = write(tmp_path, "a.png", marked((30, 20)), "PNG")
    assert await images.describe(src) is not None


async def test_closing_stops_every_worker(tmp_path, worker):
    images = worker(processes=2)
    fifo = tmp_path / "started"
    os.mkfifo(fifo)
    busy = asyncio.ensure_future(images.call(announce_then_wait, str(fifo)))
    busy_pid = await announced_pid(fifo, busy)
    src = write(tmp_path, "a.png", marked((30, 20)), "PNG")
    assert await images.describe(src) is not None
    pids = images.worker_pids()
    assert busy_pid in pids and len(pids) == 2

    await images.aclose()

    assert all(gone(pid) for pid in pids)
    with pytest.raises(UnprocessableMedia):
        await busy
    with pytest.raises(RuntimeError, match="closed"):
        await images.describe(src)
