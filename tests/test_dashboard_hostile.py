"""Attacks on the dashboard at `/`: hostile file names, refusals, keyboard use, the phone layout, the
Blossom token's lifetime, and the server side of /app/. Same harness as tests/test_dashboard.py: a real
server on a pre-bound socket, real PostgreSQL, Debian's Chromium, nostr-tools as the NIP-07 signer."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from dashboard_helpers import PHONE, account_of, open_page, signed_in
from nostr_helpers import auth_params
from playwright.async_api import expect

from satellite.nostr.keys import SecretKey

AXE = Path(__file__).parent / "js" / "node_modules" / "axe-core" / "axe.min.js"

HOSTILE_NAMES = [
    "<img src=x onerror=\"window.__pwned='img'\">.txt",
    '"><svg onload="window.__pwned=\'svg\'">.txt',
    "<script>window.__pwned='script'.txt",
    "<iframe srcdoc=\"<img src=x onerror=parent.__pwned='frame'>\" onload=\"window.__pwned='iframe'\">.txt",
    "javascript:window.__pwned='js'.txt",
]


async def upload(
    client,
    key: SecretKey,
    body: bytes,
    name: str | None = None,
    label: str | None = None,
    content_type: str | None = None,
) -> dict:
    tags = []
    if name is not None:
        tags.append(["name", name])
    if label is not None:
        tags.append(["label", label])
    headers = {"Content-Type": content_type} if content_type else {}
    got = await client.put(
        "/item", params=auth_params(key, "Authorize Upload", tags), data=body, headers=headers
    )
    assert got.status == 200, await got.text()
    return await got.json()


async def watch_dialogs(page) -> list[str]:
    dialogs: list[str] = []

    async def on_dialog(d):
        dialogs.append(d.message)
        await d.dismiss()

    page.on("dialog", on_dialog)
    return dialogs


# --- hostile data ----------------------------------------------------------------------------------


async def test_hostile_names_labels_and_active_files_run_no_script(free, browser):
    client, base = free
    key = SecretKey.generate()
    for i, name in enumerate(HOSTILE_NAMES):
        await upload(client, key, f"hostile {i}\n".encode(), name=name, label=name)
    svg = (
        b'<svg xmlns="http://www.w3.org/2000/svg" onload="window.__pwned=\'svgfile\'">'
        b"<script>window.__pwned='svgscript'</script></svg>"
    )
    await upload(client, key, svg, name="x.svg", content_type="image/svg+xml")
    html = b"<!doctype html><script>window.__pwned='html';alert(1)</script>"
    await upload(client, key, html, name="x.html", content_type="text/html")
    page, errors = await signed_in(browser, base, key)
    dialogs = await watch_dialogs(page)
    await expect(page.locator("#file-rows tr")).to_have_count(len(HOSTILE_NAMES) + 2)
    # every name is text, in the table, the labels and the delete dialog
    for name in HOSTILE_NAMES:
        await expect(page.locator("#file-rows td.name", has_text=name)).to_have_count(1)
        await expect(page.get_by_role("button", name=f"Delete {name}")).to_have_count(1)
    await page.get_by_role("button", name=f"Delete {HOSTILE_NAMES[0]}").click()
    await expect(page.locator("#confirm-name")).to_have_text(HOSTILE_NAMES[0])
    await page.keyboard.press("Escape")
    await expect(page.locator("#confirm-delete")).not_to_be_visible()
    assert await page.locator("#file-rows img:not(.preview), #file-rows svg, #file-rows script").count() == 0
    hrefs = await page.locator("a[href]").evaluate_all("as => as.map(a => a.getAttribute('href'))")
    assert not [h for h in hrefs if h.lower().startswith("javascript:")]
    # the active files: shown only as images (which run nothing); opened, they are sandboxed
    async with page.context.expect_page() as opened:
        await page.locator("#file-rows a", has_text="x.html").click()
    tab = await opened.value
    await tab.wait_for_load_state()
    assert await tab.evaluate("window.__pwned") is None
    assert await page.evaluate("window.__pwned") is None
    assert dialogs == []
    assert errors == []


# --- the delete dialog -----------------------------------------------------------------------------


async def test_escape_on_the_delete_dialog_keeps_the_file_even_after_an_earlier_delete(free, browser):
    client, base = free
    key = SecretKey.generate()
    await upload(client, key, b"first\n", name="first.txt")
    await upload(client, key, b"second\n", name="second.txt")
    page, _errors = await signed_in(browser, base, key)
    await page.get_by_role("button", name="Delete first.txt").click()
    await page.locator("#confirm-yes").click()
    await expect(page.locator("#notice")).to_have_text("first.txt deleted.")
    await expect(page.locator("#file-rows tr")).to_have_count(1)
    # the user changes their mind about the second one: Escape
    await page.get_by_role("button", name="Delete second.txt").click()
    await expect(page.locator("#confirm-delete")).to_be_visible()
    await page.keyboard.press("Escape")
    await expect(page.locator("#confirm-delete")).not_to_be_visible()
    # what the close handler decides on: the dialog's returnValue, left from the earlier delete?
    assert await page.locator("#confirm-delete").evaluate("d => d.returnValue") != "delete"
    names = [f["name"] for f in (await account_of(client, key))["files"]]
    assert names == ["second.txt"], f"Escape deleted the file: {names}"
    await expect(page.locator("#notice")).to_have_text("first.txt deleted.")


async def test_after_a_keyboard_delete_the_focus_stays_in_the_file_list(free, browser):
    client, base = free
    key = SecretKey.generate()
    await upload(client, key, b"a\n", name="a.txt")
    await upload(client, key, b"b\n", name="b.txt")
    page, _ = await signed_in(browser, base, key)
    await page.get_by_role("button", name="Delete a.txt").focus()
    await page.keyboard.press("Enter")
    await expect(page.locator("#confirm-delete")).to_be_visible()
    await page.locator("#confirm-yes").focus()
    await page.keyboard.press("Enter")
    await expect(page.locator("#notice")).to_have_text("a.txt deleted.")
    await expect(page.locator("#file-rows tr")).to_have_count(1)
    focused = await page.evaluate("document.activeElement.tagName + '#' + document.activeElement.id")
    assert focused != "BODY#", "after the delete the keyboard focus fell back to the top of the page"


async def test_focus_on_a_file_button_survives_the_payment_poll(served, browser):
    client, base = served
    key = SecretKey.generate()
    # buy once, so that a file can be stored
    page, _errors = await signed_in(browser, base, key)
    await page.get_by_role("button", name="Get invoice").click()
    await expect(page.locator("#invoice")).to_be_visible()
    pr = await page.locator("#invoice-text").input_value()
    assert (await client.post("/dev/pay", json={"bolt11": pr})).status == 200
    await expect(page.locator("#invoice-status")).to_contain_text("Paid", timeout=15_000)
    await upload(client, key, b"kept\n", name="kept.txt")
    # a second invoice: the page polls the account every 3 s while it waits
    await page.get_by_role("button", name="Get invoice").click()
    await expect(page.locator("#invoice-status")).to_have_text("Waiting for the payment…")
    async with page.expect_response(lambda r: r.url.endswith("/account"), timeout=10_000):
        pass
    await expect(page.locator("#file-rows tr")).to_have_count(1)
    button = page.get_by_role("button", name="Copy URL of kept.txt")
    await button.focus()
    async with page.expect_response(lambda r: r.url.endswith("/account"), timeout=10_000):
        pass
    await page.wait_for_function("() => document.querySelectorAll('#file-rows tr').length === 1")
    label = await page.evaluate("document.activeElement.getAttribute('aria-label')")
    assert label == "Copy URL of kept.txt", f"the poll took the keyboard focus away (now on {label!r})"


# --- refusals and the signer -----------------------------------------------------------------------

REFUSING_SIGNER = """
(() => {
  const sk = NostrTools.utils.hexToBytes(%r);
  window.nostr = {
    getPublicKey: async () => NostrTools.getPublicKey(sk),
    signEvent: async () => { throw "User rejected the request"; },
  };
})();
"""


async def test_a_signer_that_refuses_to_sign_is_explained(served, browser):
    _, base = served
    key = SecretKey.generate()
    page, errors = await open_page(browser, base, key, signer=REFUSING_SIGNER)
    await page.get_by_role("button", name="Sign in").click()
    notice = page.locator("#notice")
    await expect(notice).to_contain_text("Could not load the account")
    text = await notice.text_content()
    assert "undefined" not in text and "rejected" in text, f"the notice reads: {text!r}"
    await page.get_by_role("button", name="Get invoice").click()
    await expect(notice).to_contain_text("Could not get an invoice")
    text = await notice.text_content()
    assert "undefined" not in text and "rejected" in text, f"the notice reads: {text!r}"
    assert errors == []


async def test_a_blocked_account_is_told_why_and_what_next(served, browser, db):
    _client, base = served
    key = SecretKey.generate()
    await db.execute("INSERT INTO blocklist (kind, value, reason) VALUES ('pubkey', $1, 'spam')", key.pubkey)
    page, _errors = await signed_in(browser, base, key)
    await page.get_by_role("button", name="Get invoice").click()
    notice = page.locator("#notice")
    await expect(notice).to_contain_text("Could not get an invoice")
    text = await notice.text_content()
    assert "blocked" in text.lower(), f"the notice reads: {text!r}"


async def test_a_rate_limited_account_read_says_how_long_to_wait(make_client, settings, browser):
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    await make_client(
        settings.model_copy(
            update={"public_url": base, "requests_per_pubkey": "1/hour", "rate_limited_delay_seconds": 0}
        ),
        socket_factory=lambda *_: sock,
    )
    key = SecretKey.generate()
    _page, _errors = await signed_in(browser, base, key)  # the one read allowed
    # a second read: sign in again (a second tab, or reloading the page)
    page2, _ = await open_page(browser, base, key)
    await page2.get_by_role("button", name="Sign in").click()
    notice = page2.locator("#notice")
    await expect(notice).to_contain_text("account")
    text = await notice.text_content()
    assert re.search(r"(wait|try again in) \d+", text), f"the notice reads: {text!r}"


# --- the Blossom account token ---------------------------------------------------------------------


SKEWED_CLOCK = """
(() => {  // this computer's clock is slow by window.__skew seconds (5 minutes to start with)
  window.__skew = -300;
  const real = Date.now.bind(Date);
  Date.now = () => real() + window.__skew * 1000;
})();
"""


async def test_a_refused_account_token_is_replaced_not_shown_as_an_error(free, browser, clock):
    """The browser's clock is 5 minutes slow (v1 auth events, 600 s of slack, still work). The page
    keeps its account token for an hour by its own clock: by the server's, it lapses 5 minutes sooner,
    and the page must sign a new one rather than fail."""
    _client, base = free
    key = SecretKey.generate()
    page, errors = await open_page(browser, base, key, scripts=(SKEWED_CLOCK,))
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#account")).to_have_attribute("data-files", "0")
    # 3400 s later, on both clocks: by the page's, its token has 200 s left; by the server's it lapsed
    clock.advance(3400)
    await page.evaluate("window.__skew += 3400")
    await page.locator("#file-input").set_input_files(
        files=[{"name": "mine.txt", "mimeType": "text/plain", "buffer": b"mine\n"}]
    )
    await expect(page.locator("#uploads li.done")).to_have_count(1)
    # the account read after the upload is refused (401), signed again, and shows the file
    await expect(page.locator("#file-rows tr")).to_have_count(1)
    await expect(page.locator("#notice")).to_have_text("1 file uploaded.")
    # the one refused read (its token lapsed by the server's clock) is the browser's only complaint
    assert errors == ["Failed to load resource: the server responded with a status of 401 (Unauthorized)"]


# --- flows ----------------------------------------------------------------------------------------


async def test_two_selections_uploading_at_once_both_finish(free, browser):
    client, base = free
    key = SecretKey.generate()
    page, errors = await signed_in(browser, base, key)
    picker = page.locator("#file-input")
    await picker.set_input_files(
        files=[
            {"name": f"a{i}.bin", "mimeType": "application/octet-stream", "buffer": bytes([i]) * 200_000}
            for i in range(3)
        ]
    )
    await picker.set_input_files(
        files=[
            {
                "name": f"b{i}.bin",
                "mimeType": "application/octet-stream",
                "buffer": bytes([100 + i]) * 200_000,
            }
            for i in range(3)
        ]
    )
    await expect(page.locator("#uploads li.done")).to_have_count(6, timeout=20_000)
    await expect(page.locator("#file-rows tr")).to_have_count(6)
    assert len((await account_of(client, key))["files"]) == 6
    assert errors == []


async def test_deleting_the_only_file_of_the_last_page_goes_back_a_page(free, browser):
    client, base = free
    key = SecretKey.generate()
    for i in range(51):
        await upload(client, key, f"{i}\n".encode(), name=f"f{i:02d}.txt")
    page, errors = await signed_in(browser, base, key)
    await page.get_by_role("button", name="Next").click()
    await expect(page.locator("#page-info")).to_have_text("Page 2 of 2")
    await expect(page.locator("#file-rows tr")).to_have_count(1)
    last = await page.locator("#file-rows td.name").text_content()
    await page.get_by_role("button", name=f"Delete {last}").click()
    await page.locator("#confirm-yes").click()
    await expect(page.locator("#page-info")).to_have_text("Page 1 of 1")
    await expect(page.locator("#file-rows tr")).to_have_count(50)
    await expect(page.get_by_role("button", name="Next")).to_be_disabled()
    await expect(page.get_by_role("button", name="Previous")).to_be_disabled()
    assert errors == []


async def test_an_invoice_paid_after_signing_out_and_in_again_is_noticed(served, browser):
    client, base = served
    key = SecretKey.generate()
    page, _errors = await signed_in(browser, base, key)
    await page.get_by_role("button", name="Get invoice").click()
    await expect(page.locator("#invoice")).to_be_visible()
    pr = await page.locator("#invoice-text").input_value()
    await page.get_by_role("button", name="Sign out").click()
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#who")).to_be_visible()
    status = page.locator("#invoice-status")
    if await page.locator("#invoice").is_visible():
        # the page still shows the invoice and says it waits for it: it must then notice the payment
        await expect(status).to_have_text("Waiting for the payment…")
        assert (await client.post("/dev/pay", json={"bolt11": pr})).status == 200
        await expect(status).to_contain_text("Paid", timeout=10_000)
        await expect(page.locator("#credit")).to_have_text("1 GB-month")


async def test_a_search_that_matches_a_label_shows_the_label(free, browser):
    client, base = free
    key = SecretKey.generate()
    await upload(client, key, b"beach\n", name="IMG_0001.txt", label="holiday")
    await upload(client, key, b"desk\n", name="IMG_0002.txt")
    page, _errors = await signed_in(browser, base, key)
    await page.get_by_role("searchbox", name="Search").fill("holiday")
    rows = page.locator("#file-rows tr")
    await expect(rows).to_have_count(1)
    # the one row found must show why it matched: the word searched for appears nowhere else
    await expect(rows.first).to_contain_text("holiday")


# --- the phone layout ------------------------------------------------------------------------------

WIDE = """() => [document.documentElement.scrollWidth,
  [...document.querySelectorAll('body *')]
   .filter(e => e.getBoundingClientRect().right > 391
     || (e.scrollWidth > e.clientWidth + 1 && getComputedStyle(e).overflowX === 'visible'))
   .slice(0, 5).map(e => e.tagName + '#' + e.id + '.' + e.className)]"""


async def test_a_long_file_name_does_not_widen_the_phone_page(free, browser):
    client, base = free
    key = SecretKey.generate()
    long = "a" * 200 + ".txt"
    await upload(client, key, b"long name\n", name=long)
    page, _errors = await signed_in(browser, base, key, viewport=PHONE)
    await expect(page.locator("#file-rows tr")).to_have_count(1)
    width, wide = await page.evaluate(WIDE)
    assert width <= PHONE["width"], f"table: {width} px: {wide}"
    await page.get_by_role("button", name=f"Delete {long}").click()
    problems = []
    if await page.locator("#confirm-name").evaluate("p => p.scrollWidth > p.clientWidth"):
        problems.append("the name runs out of the delete dialog")
    await page.locator("#confirm-yes").click()
    await expect(page.locator("#notice")).to_have_text(f"{long} deleted.")
    width, wide = await page.evaluate(WIDE)
    if width > PHONE["width"]:
        problems.append(f"after the delete (notice with the name) the page is {width} px wide: {wide}")
    assert problems == []


async def test_the_phone_page_with_an_invoice_and_uploads_fits(served, browser):
    _, base = served
    key = SecretKey.generate()
    page, errors = await signed_in(browser, base, key, viewport=PHONE)
    await page.get_by_role("button", name="Get invoice").click()
    await expect(page.locator("#invoice")).to_be_visible()
    await page.locator("#file-input").set_input_files(
        files=[
            {"name": f"{'b' * 120}-{i}.txt", "mimeType": "text/plain", "buffer": b"x\n"} for i in range(12)
        ]
    )
    await expect(page.locator("#uploads li.failed")).to_have_count(12)
    width, wide = await page.evaluate(WIDE)
    assert width <= PHONE["width"], f"{width} px: {wide}"
    assert (
        errors
        == ["Failed to load resource: the server responded with a status of 402 (Payment Required)"] * 12
    )


# --- axe-core --------------------------------------------------------------------------------------


async def axe(page) -> list[dict]:
    await page.add_script_tag(path=str(AXE))
    found = await page.evaluate("""async () => (await axe.run()).violations
      .filter(v => v.impact === 'serious' || v.impact === 'critical')
      .map(v => ({id: v.id, impact: v.impact, nodes: v.nodes.slice(0, 3).map(n => n.target.join(' '))}))""")
    return found


@pytest.mark.skipif(not AXE.exists(), reason="axe-core is not installed in tests/js")
async def test_axe_finds_nothing_serious_signed_out_and_signed_in(free, browser):
    client, base = free
    key = SecretKey.generate()
    await upload(client, key, b"one\n", name="one.txt")
    # axe's script tag needs a policy that lets it in: bypass CSP in this context only
    page, _ = await open_page(browser, base, key, bypass_csp=True)
    signed_out = await axe(page)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#file-rows tr")).to_have_count(1)
    await page.get_by_role("button", name="Get invoice").click()
    await expect(page.locator("#invoice")).to_be_visible()
    signed_in_found = await page.evaluate("""async () => (await axe.run()).violations
      .filter(v => v.impact === 'serious' || v.impact === 'critical')
      .map(v => ({id: v.id, impact: v.impact, nodes: v.nodes.slice(0, 3).map(n => n.target.join(' '))}))""")
    await page.get_by_role("button", name="Delete one.txt").click()
    dialog = await page.evaluate("""async () => (await axe.run()).violations
      .filter(v => v.impact === 'serious' || v.impact === 'critical').map(v => v.id)""")
    assert (signed_out, signed_in_found, dialog) == ([], [], []), json.dumps(
        {"signed out": signed_out, "signed in": signed_in_found, "dialog": dialog}, indent=1
    )


async def test_every_control_has_a_name_and_a_visible_focus(free, browser):
    client, base = free
    key = SecretKey.generate()
    await upload(client, key, b"one\n", name="one.txt")
    page, _errors = await signed_in(browser, base, key)
    seen = []
    for _ in range(40):
        await page.keyboard.press("Tab")
        info = await page.evaluate("""() => {
          const e = document.activeElement;
          const s = getComputedStyle(e);
          const label = e.closest('label');
          const ls = label ? getComputedStyle(label) : null;
          const outlined = (st) => st && st.outlineStyle !== 'none' && parseFloat(st.outlineWidth) > 0;
          const text = (e.getAttribute('aria-label') || e.textContent || '').trim();
          return {tag: e.tagName, id: e.id, text,
                  focus: outlined(s) || outlined(ls) || s.boxShadow !== 'none'};
        }""")
        seen.append(info)
    unfocused = [i for i in seen if not i["focus"] and i["tag"] != "BODY"]
    assert unfocused == [], f"controls without a visible focus: {unfocused}"


async def test_the_file_chooser_shows_its_keyboard_focus_and_opens_with_space(free, browser):
    _, base = free
    key = SecretKey.generate()
    page, _errors = await signed_in(browser, base, key)
    await page.get_by_role("button", name="Get invoice").focus()
    for _ in range(10):
        await page.keyboard.press("Tab")
        if await page.evaluate("document.activeElement.id") == "file-input":
            break
    assert await page.evaluate("document.activeElement.id") == "file-input"
    # the input itself is a clipped 1 px box: what the user sees is the "Choose files" label
    outline = await page.locator("label[for=file-input]").evaluate(
        "l => { const s = getComputedStyle(l); return s.outlineStyle + ' ' + s.outlineWidth; }"
    )
    async with page.expect_file_chooser(timeout=5_000):
        await page.locator("#file-input").press("Space")
    assert not outline.startswith("none"), (
        f"focus on the file chooser is invisible (label outline: {outline})"
    )


# --- the server side of /app/ ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/app/../satellite/config.py",
        "/app/%2e%2e/config.py",
        "/app/%2E%2E%2Fconfig.py",
        "/app/..%2fconfig.py",
        "/app/vendor/../../api/dashboard.py",
        "/app//etc/passwd",
        "/app/%2fetc%2fpasswd",
        "/app/__init__.py",
        "/app/api/dashboard.py",
        "/app/.%2e/api/dashboard.py",
    ],
)
async def test_app_paths_outside_the_static_files_are_404(free, path):
    client, _ = free
    got = await client.get(path)
    body = await got.read()
    assert got.status == 404, (got.status, body[:200])
    assert b"import" not in body and b"root:" not in body


async def test_assets_have_exact_types_nosniff_and_revalidate(free):
    client, _ = free
    for path, kind in [
        ("/app/app.js", "text/javascript"),
        ("/app/app.css", "text/css"),
        ("/app/vendor/qrcode-generator-1.4.4/qrcode.js", "text/javascript"),
    ]:
        got = await client.get(path)
        assert got.status == 200
        assert got.content_type == kind, (path, got.content_type)
        assert got.headers["X-Content-Type-Options"] == "nosniff"
        assert "no-cache" in got.headers["Cache-Control"]
    html = await client.get("/", headers={"Accept": "text/html"})
    assert html.headers["X-Content-Type-Options"] == "nosniff"
    assert "frame-ancestors 'none'" in html.headers["Content-Security-Policy"]
    again = await client.get("/", headers={"Accept": "text/html", "If-None-Match": html.headers["ETag"]})
    assert again.status == 304 and again.headers.get("Vary") == "Accept"


async def test_the_json_answer_at_root_also_varies_on_accept(free):
    """A cache in front of the server must not hand the page to an API client, or the JSON to a
    browser: both answers at `/` must say they vary on Accept."""
    client, _ = free
    got = await client.get("/", headers={"Accept": "application/json"})
    assert got.status == 200
    assert "accept" in got.headers.get("Vary", "").lower(), dict(got.headers)
