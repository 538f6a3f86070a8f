"""The dashboard at `/`, driven in Debian's headless Chromium by Playwright (never a downloaded
browser), against a running server, with a NIP-07 signer injected into the page: nostr-tools'
browser bundle signing with a test key. Screenshots at desktop and phone sizes go to ARTIFACTS_DIR
(default: tests/artifacts)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import aiohttp
import pytest
from nostr_helpers import auth_params
from playwright.async_api import Page, async_playwright, expect

from satellite.config import Settings
from satellite.nostr.keys import SecretKey

CHROMIUM = "/usr/bin/chromium"
BUNDLE = Path(__file__).parent / "js" / "node_modules" / "nostr-tools" / "lib" / "nostr.bundle.js"
ARTIFACTS = Path(os.environ.get("ARTIFACTS_DIR", Path(__file__).parent / "artifacts"))
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


SIGNER = """
(() => {
  const sk = NostrTools.utils.hexToBytes(%r);
  window.nostr = {
    getPublicKey: async () => NostrTools.getPublicKey(sk),
    signEvent: async (event) => NostrTools.finalizeEvent(event, sk),
  };
})();
"""


@pytest.fixture
async def served(make_client, settings: Settings):
    """A server on a port chosen before it starts, with that address as its public URL, no free
    allowance (so storage must be bought), on the dev Lightning node."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    client = await make_client(
        settings.model_copy(update={"public_url": base, "free_storage_bytes": 0}),
        socket_factory=lambda *_: sock,
    )
    return client, base


@pytest.fixture
async def browser():
    async with async_playwright() as p:
        launched = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        await launched.close()


async def open_page(browser, base: str, key: SecretKey | None, viewport=DESKTOP) -> tuple[Page, list[str]]:
    context = await browser.new_context(viewport=viewport)
    await context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
    if key is not None:
        # one script: the bundle's `var NostrTools` is the signer's, and stays for the test to use
        bundle = BUNDLE.read_text()
        await context.add_init_script(bundle + "\nwindow.NostrTools = NostrTools;\n" + SIGNER % key.raw.hex())
    page = await context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    await page.goto(base)
    await expect(page.locator("body")).to_have_attribute("data-ready", "true")
    return page, errors


async def shoot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / name), full_page=True)


async def account_of(client, key: SecretKey) -> dict:
    return await (await client.get("/account", params=auth_params(key, "Authenticate User"))).json()


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
    npub = await page.evaluate("NostrTools.nip19.npubEncode(%r)" % key.pubkey)
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
    await row.get_by_role("button", name="Copy the URL of one.txt").click()
    await expect(page.locator("#notice")).to_have_text("URL copied.")
    url = await page.evaluate("navigator.clipboard.readText()")
    async with aiohttp.ClientSession() as http, http.get(url) as got:
        assert got.status == 200 and await got.read() == one.read_bytes()
    await shoot(page, "dashboard-desktop.png")

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
