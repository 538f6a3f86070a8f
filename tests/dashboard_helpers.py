"""What the dashboard tests share: Debian's Chromium, the NIP-07 signer injected into the page
(nostr-tools' browser bundle signing with a test key), opening and signing in to the page, and
screenshots (in ARTIFACTS_DIR, default tests/artifacts). The fixtures `served`, `free` and `browser`
are in conftest.py."""

from __future__ import annotations

import os
import re
from pathlib import Path

from nostr_helpers import auth_params
from playwright.async_api import Page, expect

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


async def open_page(
    browser,
    base: str,
    key: SecretKey | None,
    viewport=DESKTOP,
    *,
    signer: str = SIGNER,
    scripts: tuple[str, ...] = (),
    bypass_csp: bool = False,
) -> tuple[Page, list[str]]:
    """The page, loaded and ready, in a context of its own: `scripts` run first in every page, then
    the signer (`signer` with the key's hex) unless `key` is None. The console's errors and the page's
    uncaught exceptions are collected in the list returned."""
    context = await browser.new_context(viewport=viewport, bypass_csp=bypass_csp)
    await context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
    for script in scripts:
        await context.add_init_script(script)
    if key is not None:
        # one script: the bundle's `var NostrTools` is the signer's, and stays for the test to use
        bundle = BUNDLE.read_text()
        await context.add_init_script(bundle + "\nwindow.NostrTools = NostrTools;\n" + signer % key.raw.hex())
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


async def signed_in(browser, base: str, key: SecretKey, viewport=DESKTOP) -> tuple[Page, list[str]]:
    page, errors = await open_page(browser, base, key, viewport)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#who")).to_be_visible()
    await expect(page.locator("#account")).to_have_attribute("data-files", re.compile(r"^\d+$"))
    return page, errors
