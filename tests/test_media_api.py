"""BUD-05 `PUT /media` and `HEAD /media` over real HTTP, and NIP-94 `dim`/`blurhash` on every API."""

from __future__ import annotations

import hashlib
import io
import struct
import zlib

import aiohttp
import blurhash as reference_blurhash
from nostr_helpers import auth_params, blossom_header, nip98_header
from PIL import Image

from satellite.nostr.keys import SecretKey

GPS_IFD = 0x8825


def jpeg_with_gps(size: tuple[int, int] = (640, 480), *, noise: bool = False) -> bytes:
    image = Image.new("RGB", size, (200, 30, 30))
    if noise:  # incompressible: a file well over the in-memory threshold
        image = Image.frombytes("RGB", size, hashlib.shake_256(b"seed").digest(size[0] * size[1] * 3))
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"  # Make
    exif.get_ifd(GPS_IFD)[2] = (52.0, 22.0, 10.0)  # GPSLatitude
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif.tobytes(), comment=b"my home address")
    return out.getvalue()


def png(size: tuple[int, int] = (300, 200), colour=(10, 120, 240)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, "PNG")
    return out.getvalue()


def png_bomb(width: int = 60000, height: int = 60000) -> bytes:
    """A small PNG whose header declares width x height pixels."""
    data = bytearray(png((1, 1)))
    ihdr = 8 + 8  # signature, then the IHDR chunk's length and type
    data[ihdr : ihdr + 8] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[12 : ihdr + 13]))
    data[ihdr + 13 : ihdr + 17] = struct.pack(">I", crc)
    return bytes(data)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def put_media(client, key: SecretKey, body: bytes):
    headers = {**blossom_header(key, "media", x=[sha(body)]), "X-SHA-256": sha(body)}
    return await client.put("/media", data=body, headers=headers)


async def test_media_strips_gps_and_exif_and_names_the_new_blob(client, user):
    original = jpeg_with_gps()
    resp = await put_media(client, user, original)
    assert resp.status == 201, await resp.text()
    descriptor = await resp.json()
    assert descriptor["sha256"] != sha(original)
    assert descriptor["type"] == "image/jpeg"
    stored = await (await client.get(f"/{descriptor['sha256']}")).read()
    assert sha(stored) == descriptor["sha256"] and len(stored) == descriptor["size"]
    for secret in (b"SecretCam", b"my home address"):
        assert secret in original and secret not in stored
    cleaned = Image.open(io.BytesIO(stored))
    assert not cleaned.getexif() and cleaned.size == (640, 480)
    tags = {t[0]: t[1] for t in descriptor["nip94"]}
    assert tags["ox"] == sha(original) and tags["x"] == descriptor["sha256"]
    assert tags["dim"] == "640x480"
    assert reference_blurhash.decode(tags["blurhash"], 4, 4)  # a valid blurhash
    # The original was never stored.
    assert (await client.head(f"/{sha(original)}")).status == 404


async def test_a_large_image_is_scaled_down_on_its_long_side(make_client, settings, user):
    client = await make_client(settings.model_copy(update={"image_max_edge": 400}))
    original = jpeg_with_gps((1600, 900), noise=True)
    assert len(original) > 256 * 1024  # read through a spool file, not in memory
    resp = await put_media(client, user, original)
    assert resp.status == 201, await resp.text()
    tags = {t[0]: t[1] for t in (await resp.json())["nip94"]}
    assert tags["dim"] == "400x225"


async def test_media_refuses_what_it_does_not_process(client, user, db):
    pdf = b"%PDF-1.4\n" + b"x" * 500
    resp = await put_media(client, user, pdf)
    assert resp.status == 415 and "PUT /upload" in resp.headers["X-Reason"]
    bomb = await put_media(client, user, png_bomb())
    assert bomb.status == 422 and "pixels" in bomb.headers["X-Reason"]
    truncated = jpeg_with_gps()[:400]
    assert (await put_media(client, user, truncated)).status == 422
    assert await db.fetchval("SELECT count(*) FROM blobs") == 0


async def test_media_needs_a_media_token_naming_the_original(client, user):
    body = png()
    upload_token = {**blossom_header(user, "upload", x=[sha(body)]), "X-SHA-256": sha(body)}
    assert (await client.put("/media", data=body, headers=upload_token)).status == 401
    wrong = {**blossom_header(user, "media", x=["7" * 64]), "X-SHA-256": sha(body)}
    assert (await client.put("/media", data=body, headers=wrong)).status == 401
    assert (await client.put("/media", data=body)).status == 401


async def test_head_media_pre_checks_the_type(client, user):
    body = png()

    def headers(kind: str) -> dict[str, str]:
        token = blossom_header(user, "media", x=[sha(body)])
        return {**token, "X-SHA-256": sha(body), "X-Content-Length": str(len(body)), "X-Content-Type": kind}

    assert (await client.head("/media", headers=headers("image/png"))).status == 200
    refused = await client.head("/media", headers=headers("application/pdf"))
    assert refused.status == 415 and refused.headers["X-Reason"]


async def test_dim_and_blurhash_are_in_nip94_on_every_api(client, user):
    """A v1 upload, a Blossom upload and a NIP-96 upload of images: each answer's NIP-94 tags carry the
    image's size and a blurhash of its colour, and listing shows them too."""
    red, green, blue = (
        png(colour=(255, 0, 0)),
        png((64, 32), colour=(0, 255, 0)),
        png((20, 50), colour=(0, 0, 255)),
    )
    v1 = await (await client.put("/item", params=auth_params(user, "Authorize Upload"), data=red)).json()
    blossom = await (
        await client.put("/upload", data=green, headers=blossom_header(user, "upload", x=[sha(green)]))
    ).json()
    form = aiohttp.FormData()
    form.add_field("file", blue, filename="blue.png", content_type="image/png")
    nip96 = await (
        await client.post("/n96", data=form, headers=nip98_header(user, "http://cdn.test/n96", "POST"))
    ).json()
    answers = [(v1["nip94"], "300x200", (255, 0, 0)), (blossom["nip94"], "64x32", (0, 255, 0))]
    answers.append((nip96["nip94_event"]["tags"], "20x50", (0, 0, 255)))
    for tags, dim, colour in answers:
        found = {t[0]: t[1] for t in tags}
        assert found["dim"] == dim
        pixel = reference_blurhash.decode(found["blurhash"], 1, 1)[0][0]
        assert all(abs(a - b) <= 8 for a, b in zip(pixel, colour, strict=False)), (pixel, colour)
    listed = await (await client.get(f"/list/{user.pubkey}", headers=blossom_header(user, "list"))).json()
    assert {next(t[1] for t in d["nip94"] if t[0] == "dim") for d in listed} == {"300x200", "64x32", "20x50"}
    # The same image again, by someone else: the size is known without reading the pixels again.
    other = await (
        await client.put(
            "/upload", data=green, headers=blossom_header(SecretKey.generate(), "upload", x=[sha(green)])
        )
    ).json()
    assert ["dim", "64x32"] in other["nip94"]


async def test_a_file_that_is_not_an_image_has_no_dim(client, user):
    body = b"%PDF-1.4\n" + b"y" * 300
    resp = await client.put("/upload", data=body, headers=blossom_header(user, "upload", x=[sha(body)]))
    assert not [t for t in (await resp.json())["nip94"] if t[0] in ("dim", "blurhash")]
