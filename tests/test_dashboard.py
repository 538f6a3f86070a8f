"""The dashboard at `/`, driven in Debian's headless Chromium by Playwright (never a downloaded
browser), against a running server, with a NIP-07 signer injected into the page: nostr-tools'
browser bundle signing with a test key. Screenshots at desktop and phone sizes go to ARTIFACTS_DIR
(default: tests/artifacts)."""

from __future__ import annotations

import io
import os
import re
import socket
from pathlib import Path

import aiohttp
from dashboard_helpers import PHONE, account_of, open_page, shoot, signed_in
from nostr_helpers import auth_params
from PIL import Image
from playwright.async_api import expect

from satellite.nostr.keys import SecretKey


async def test_without_a_signer_the_page_says_so_and_the_api_still_answers_json(served, browser):
    client, base = served
    page, errors = await open_page(browser, base, None)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#no-signer")).to_be_visible()
    await expect(page.locator("#notice")).to_contain_text("No Nostr signer")
    assert errors == []
    info = await client.get("/")  # an API client (no text/html) still gets the service description
    assert (await info.json())["name"] == "satellite"


async def test_sign_in_buy_upload_copy_delete_and_the_figures_match_the_api(served, browser, tmp_path):
    client, base = served
    key = SecretKey.generate()
    page, errors = await open_page(browser, base, key)
    # keyboard only: Tab to the sign-in button and press Enter
    for _ in range(10):
        await page.keyboard.press("Tab")
        if await page.evaluate("document.activeElement && document.activeElement.id") == "sign-in":
            break
    await page.keyboard.press("Enter")
    npub = await page.evaluate("pk => NostrTools.nip19.npubEncode(pk)", key.pubkey)
    await expect(page.locator("#who")).to_have_text(npub)

    one = tmp_path / "one.txt"
    one.write_bytes(b"first file \n" * 4000)
    two = tmp_path / "two.bin"
    two.write_bytes(os.urandom(300_000))
    # no credit yet: the page says why, and what to do
    await page.locator("#file-input").set_input_files(str(one))
    await expect(page.locator("#uploads li.failed")).to_contain_text("Buy storage")

    await page.locator("#gb-months").fill("2")
    await expect(page.locator("#price")).to_contain_text("sats")
    await page.get_by_role("button", name="Get invoice").click()
    invoice = page.locator("#invoice-text")
    await expect(page.locator("#invoice")).to_be_visible()
    pr = await invoice.input_value()
    assert pr.startswith("lnbc")
    assert await page.locator("#open-wallet").get_attribute("href") == f"lightning:{pr}"
    await expect(page.locator("#qr img")).to_be_visible()
    paid = await client.post("/dev/pay", json={"bolt11": pr})
    assert paid.status == 200, await paid.text()
    await expect(page.locator("#invoice-status")).to_contain_text("Paid", timeout=15_000)
    await expect(page.locator("#credit")).to_have_text("2 GB-months")

    await page.locator("#uploads").evaluate("u => u.replaceChildren()")
    await page.locator("#file-input").set_input_files([str(one), str(two)])
    await expect(page.locator("#uploads li.done")).to_have_count(2, timeout=15_000)
    for value in await page.locator("#uploads progress").evaluate_all("ps => ps.map(p => p.value)"):
        assert value == 1
    await expect(page.locator("#file-rows tr")).to_have_count(2)

    row = page.locator("#file-rows tr", has_text="one.txt")
    await row.get_by_role("button", name="Copy URL of one.txt").click()
    await expect(page.locator("#notice")).to_have_text("URL copied.")
    url = await page.evaluate("navigator.clipboard.readText()")
    async with aiohttp.ClientSession() as http, http.get(url) as got:
        assert got.status == 200 and await got.read() == one.read_bytes()
    await shoot(page, "dashboard-desktop.png")
    # the time left counts down by itself
    left = await page.locator("#countdown").text_content()
    assert left and re.fullmatch(r"\d+d \d\d:\d\d:\d\d", left), left
    await expect(page.locator("#countdown")).not_to_have_text(left)

    await (
        page.locator("#file-rows tr", has_text="two.bin").get_by_role("button", name="Delete two.bin").click()
    )
    await expect(page.locator("#confirm-delete")).to_be_visible()
    await page.locator("#confirm-yes").click()
    await expect(page.locator("#file-rows tr")).to_have_count(1)
    await expect(page.locator("#notice")).to_have_text("two.bin deleted.")

    seen = await account_of(client, key)
    figures = await page.locator("#account").evaluate("a => ({...a.dataset})")
    assert int(figures["storageTotal"]) == seen["storageTotal"] == one.stat().st_size
    assert float(figures["creditTotal"]) == seen["creditTotal"] == 2
    assert int(figures["files"]) == len(seen["files"]) == 1
    assert abs(float(figures["usageTotal"]) - seen["usageTotal"]) < 1e-9
    [purchase] = [t for t in seen["transactions"] if t["type"] == "purchase"]
    await expect(page.locator("#tx-rows")).to_contain_text(purchase["receipt"]["id"][:12])
    # the one deliberate refusal above is the browser's only complaint; no script error at all
    assert errors == ["Failed to load resource: the server responded with a status of 402 (Payment Required)"]

    phone, phone_errors = await open_page(browser, base, key, viewport=PHONE)
    await phone.get_by_role("button", name="Sign in").click()
    await expect(phone.locator("#file-rows tr")).to_have_count(1)
    await shoot(phone, "dashboard-phone.png")
    width = await phone.evaluate("document.documentElement.scrollWidth")
    wide = await phone.evaluate(
        "[...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > 391)"
        ".slice(0, 5).map(e => e.tagName + '#' + e.id + '.' + e.className)"
    )
    assert width <= PHONE["width"], f"the page is {width} px wide on a {PHONE['width']} px phone: {wide}"
    assert phone_errors == []


async def test_thousands_of_files_page_fifty_at_a_time_and_search_and_sort(free, browser):
    client, base = free
    key = SecretKey.generate()
    for i in range(120):
        body = f"file number {i:03d}\n".encode() * (i + 1)
        stored = await client.put(
            "/item", params=auth_params(key, "Authorize Upload", [["name", f"n{i:03d}.txt"]]), data=body
        )
        assert stored.status == 200
    page, errors = await signed_in(browser, base, key)
    rows = page.locator("#file-rows tr")
    await expect(rows).to_have_count(50)
    await expect(page.locator("#page-info")).to_have_text("Page 1 of 3")
    await expect(page.locator("#file-count")).to_have_text("(120)")
    await page.get_by_role("button", name="Next").click()
    await expect(page.locator("#page-info")).to_have_text("Page 2 of 3")
    await page.get_by_role("button", name="Size").click()  # smallest first
    await expect(page.locator("#file-table th", has_text="Size")).to_have_attribute("aria-sort", "ascending")
    await expect(page.locator("#page-info")).to_have_text("Page 2 of 3")
    await expect(rows.first.locator("td.name")).to_have_text("n050.txt")
    await page.get_by_role("button", name="Size").click()  # largest first
    await page.get_by_role("button", name="Previous").click()
    await expect(rows.first.locator("td.name")).to_have_text("n119.txt")
    await page.get_by_role("searchbox", name="Search").fill("n11")  # n is not a hex digit: no hash matches
    await expect(rows).to_have_count(10)
    await expect(page.locator("#file-count")).to_have_text("(10 of 120)")
    await expect(page.locator("#page-info")).to_have_text("Page 1 of 1")
    assert errors == []


async def test_an_upload_can_be_cancelled_and_shows_its_speed_and_stores_nothing(free, browser, tmp_path):
    client, base = free
    key = SecretKey.generate()
    page, errors = await signed_in(browser, base, key)
    cdp = await page.context.new_cdp_session(page)
    await cdp.send(  # a slow uplink: 200 kB/s
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": 200_000},
    )
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(8_000_000))
    await page.locator("#file-input").set_input_files(str(big))
    status = page.locator("#uploads li .state")
    await expect(status).to_contain_text(r"/s", timeout=15_000)  # "x of 8.00 MB · y kB/s"
    await expect(status).to_contain_text("of 8.00 MB")
    await page.get_by_role("button", name="Cancel the upload of big.bin").click()
    await expect(status).to_have_text("Cancelled.")
    await cdp.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1},
    )
    seen = await account_of(client, key)
    assert seen["files"] == []
    assert errors == []


def jpeg_with_location() -> bytes:
    image = Image.new("RGB", (64, 48), (200, 30, 30))
    exif = Image.Exif()
    exif[0x010F] = "CameraMaker"  # Make
    exif[0x8825] = {1: "N", 2: (48.0, 51.0, 30.0)}  # GPS
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif.tobytes())
    return out.getvalue()


async def test_strip_metadata_uploads_a_cleaned_copy_through_media(free, browser, tmp_path):
    client, base = free
    key = SecretKey.generate()
    page, errors = await signed_in(browser, base, key)
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(jpeg_with_location())
    assert b"CameraMaker" in photo.read_bytes()
    await page.get_by_label("Strip metadata").check()
    await page.locator("#file-input").set_input_files(str(photo))
    await expect(page.locator("#uploads li.done")).to_contain_text("metadata stripped", timeout=15_000)
    await expect(page.locator("#file-rows tr")).to_have_count(1)
    await expect(page.locator("#file-rows img.preview")).to_be_visible()
    [stored] = (await account_of(client, key))["files"]
    async with aiohttp.ClientSession() as http, http.get(stored["url"]) as got:
        cleaned = await got.read()
    assert cleaned != photo.read_bytes() and b"CameraMaker" not in cleaned
    assert Image.open(io.BytesIO(cleaned)).size == (64, 48)
    assert errors == []


async def test_the_page_and_its_files_are_served_with_their_own_policy(free):
    client, _ = free
    page = await client.get("/", headers={"Accept": "text/html,application/xhtml+xml"})
    assert page.status == 200 and page.content_type == "text/html"
    policy = page.headers["Content-Security-Policy"]
    assert (
        "script-src 'self'" in policy
        and "default-src 'none'" in policy
        and "frame-ancestors 'none'" in policy
    )
    assert page.headers["Vary"] == "Accept"
    html = await page.text()
    assert "http" not in html.replace('lang="en"', "")  # nothing from elsewhere: only this server's paths
    script = await client.get("/app/app.js")
    assert script.status == 200 and "javascript" in script.content_type
    again = await client.get("/app/app.js", headers={"If-None-Match": script.headers["ETag"]})
    assert again.status == 304
    licence = await client.get("/app/vendor/qrcode-generator-1.4.4/LICENSE")
    assert licence.status == 200 and "MIT" in await licence.text()
    missing = await client.get("/app/nothing.js")
    assert missing.status == 404 and "X-Reason" in missing.headers
    assert (await client.get("/app/__init__.py")).status == 404


WEBLN = """
window.webln = {  // a wallet at its WebLN boundary: it pays through the dev node's own endpoint
  enable: async () => {},
  sendPayment: async (pr) => {
    const res = await fetch("/dev/pay", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ bolt11: pr }) });
    if (!res.ok) throw new Error("payment failed");
    return { preimage: (await res.json()).preimage };
  },
};
"""


async def test_a_webln_wallet_pays_from_the_page_and_the_account_updates_by_itself(served, browser):
    client, base = served
    key = SecretKey.generate()
    page, errors = await open_page(browser, base, key, scripts=(WEBLN,))
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_role("button", name="Get invoice").click()
    await page.get_by_role("button", name="Pay with WebLN").click()
    await expect(page.locator("#invoice-status")).to_contain_text("Paid", timeout=15_000)
    await expect(page.locator("#credit")).to_have_text("1 GB-month")
    assert (await account_of(client, key))["creditTotal"] == 1
    assert errors == []


async def test_dropped_files_magnets_torrents_refusals_and_the_countdown(
    make_client, settings, browser, tmp_path
):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    client = await make_client(
        settings.model_copy(update={"public_url": base, "max_upload_bytes": 100_000}),
        socket_factory=lambda *_: sock,
    )
    key = SecretKey.generate()
    page, errors = await signed_in(browser, base, key)
    # drag and drop: a DataTransfer with two files dropped on the drop zone
    await page.locator("#drop").evaluate(
        """(zone) => {
          const data = new DataTransfer();
          data.items.add(new File(["hello from a drop\\n"], "dropped.txt", { type: "text/plain" }));
          data.items.add(new File([new Uint8Array(150000)], "huge.bin"));
          const options = { dataTransfer: data, bubbles: true, cancelable: true };
          zone.dispatchEvent(new DragEvent("dragover", options));
          zone.dispatchEvent(new DragEvent("drop", options));
        }"""
    )
    await expect(page.locator("#uploads li.done")).to_have_count(1)
    await expect(page.locator("#uploads li.failed")).to_contain_text(
        "Too large: this server takes files of up to 100.0 kB"
    )
    row = page.locator("#file-rows tr", has_text="dropped.txt")
    await expect(row).to_have_count(1)
    [stored] = (await account_of(client, key))["files"]
    await row.get_by_role("button", name="Copy magnet of dropped.txt").click()
    assert await page.evaluate("navigator.clipboard.readText()") == stored["magnet"]
    async with page.expect_download() as download:
        await row.get_by_role("link", name=".torrent of dropped.txt").click()
    torrent = await (await download.value).path()
    assert Path(torrent).read_bytes().startswith(b"d") and stored["infohash"]  # a bencoded dictionary
    assert (await download.value).suggested_filename == f"{stored['sha256']}.torrent"
    # nothing billable (the free allowance covers this file): no countdown
    await expect(page.locator("#countdown")).to_have_text("unlimited")
    # the deliberate refusal is the browser's only complaint (its reason phrase depends on when the
    # server refused: before the body or during it)
    [refusal] = errors
    assert refusal.startswith("Failed to load resource: the server responded with a status of 413 ")
