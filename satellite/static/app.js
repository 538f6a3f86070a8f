// The satellite dashboard. It uses this server only through its public APIs, as any app may:
// v1 auth events (kind 22242) for uploads, deletes and offers, a reusable Blossom token (kind 24242,
// t=account) for reading the account, and the offer -> invoice flow for buying storage. Every
// signature comes from the NIP-07 signer in window.nostr.

const $ = (id) => document.getElementById(id);
const PAGE_SIZE = 50;
const POLL_MS = 3000;
const state = {
  info: null, pubkey: null, token: null, tokenExpires: 0, account: null,
  sort: { key: "created", dir: -1 }, page: 0, query: "", poll: null, countdown: null,
};

// --- small helpers ---------------------------------------------------------------------------------

const now = () => Math.floor(Date.now() / 1000);
const nonce = () => (crypto.randomUUID ? crypto.randomUUID() : String(Math.random()).slice(2));

function say(text, { error = false } = {}) {
  const notice = $("notice");
  notice.textContent = text;
  notice.classList.toggle("error", error);
}

function fmtBytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "kB", "MB", "GB", "TB"];
  let i = 0;
  let v = Number(n);
  while (v >= 1000 && i < units.length - 1) { v /= 1000; i += 1; }
  return `${i === 0 ? v : v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`;
}

function gbMonths(n) {
  return `${n} GB-month${Number(n) === 1 ? "" : "s"}`;
}

function fmtDate(seconds) {
  return seconds ? new Date(seconds * 1000).toLocaleString() : "–";
}

function fmtSpan(seconds) {
  if (seconds <= 0) return "run out";
  const d = Math.floor(seconds / 86400);
  const h = Math.floor((seconds % 86400) / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = seconds % 60;
  const pad = (x) => String(x).padStart(2, "0");
  return `${d}d ${pad(h)}:${pad(m)}:${pad(s)}`;
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key in node) node[key] = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

// --- npub (NIP-19, bech32) -------------------------------------------------------------------------

const BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l";

function polymod(values) {
  const gen = [0x3b6a57b2, 0x26508e6d, 0x1ea119fa, 0x3d4233dd, 0x2a1462b3];
  let chk = 1;
  for (const v of values) {
    const top = chk >> 25;
    chk = ((chk & 0x1ffffff) << 5) ^ v;
    for (let i = 0; i < 5; i += 1) if ((top >> i) & 1) chk ^= gen[i];
  }
  return chk;
}

function npub(hex) {
  const bytes = hex.match(/../g).map((b) => parseInt(b, 16));
  const words = [];
  let acc = 0;
  let bits = 0;
  for (const b of bytes) {
    acc = (acc << 8) | b;
    bits += 8;
    while (bits >= 5) { bits -= 5; words.push((acc >> bits) & 31); }
  }
  if (bits > 0) words.push((acc << (5 - bits)) & 31);
  const hrp = "npub";
  const expanded = [...[...hrp].map((c) => c.charCodeAt(0) >> 5), 0, ...[...hrp].map((c) => c.charCodeAt(0) & 31)];
  const mod = polymod([...expanded, ...words, 0, 0, 0, 0, 0, 0]) ^ 1;
  const checksum = [0, 1, 2, 3, 4, 5].map((i) => (mod >> (5 * (5 - i))) & 31);
  return hrp + "1" + [...words, ...checksum].map((w) => BECH32[w]).join("");
}

// --- signing and the API ---------------------------------------------------------------------------

class ApiFailure extends Error {
  constructor(status, reason, retryAfter) {
    super(reason);
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

async function sign(template) {
  if (!window.nostr) throw new Error("no Nostr signer in this browser");
  try {
    return await window.nostr.signEvent(template);
  } catch (err) {
    const why = (err && err.message) || String(err);
    throw new Error(`the signer did not sign (${why}): approve the request in your signer, then try again`);
  }
}

const reason = (err) => (err && err.message) || String(err);

// A v1 auth event: single use, for one request.
async function v1Auth(content, tags = []) {
  const event = await sign({ kind: 22242, created_at: now(), content, tags: [...tags, ["nonce", nonce()]] });
  return "auth=" + encodeURIComponent(JSON.stringify(event));
}

function base64(text) {
  const bytes = new TextEncoder().encode(text);
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary);
}

// A Blossom token (BUD-11): reusable until it expires.
async function blossomToken(verb, tags = [], lifetime = 600) {
  const event = await sign({
    kind: 24242, created_at: now(), content: `satellite dashboard: ${verb}`,
    tags: [["t", verb], ["expiration", String(now() + lifetime)], ...tags],
  });
  return "Nostr " + base64(JSON.stringify(event));
}

async function accountToken() {
  if (!state.token || state.tokenExpires - now() < 60) {
    state.token = await blossomToken("account", [], 3600);
    state.tokenExpires = now() + 3600;
  }
  return state.token;
}

async function api(method, path, { auth, body, headers = {} } = {}) {
  const res = await fetch(path, {
    method, body, headers: { Accept: "application/json", ...headers, ...(auth ? { Authorization: auth } : {}) },
  });
  let data = null;
  try { data = await res.json(); } catch { data = null; }
  if (!res.ok) {
    throw new ApiFailure(res.status, (data && data.reason) || res.headers.get("X-Reason") || res.statusText,
      res.headers.get("Retry-After"));
  }
  return data;
}

// What a refused request means, and what to do next.
function explain(status, reason, retryAfter) {
  switch (status) {
    case 402: return "Not enough storage credit for this file. Buy storage above, then upload it again.";
    case 413: return `Too large: this server takes files of up to ${fmtBytes(state.info && state.info.maxUploadBytes)}.`;
    case 403: return `Refused: ${reason}. The file or the account may be blocked, or the signature was not accepted.`;
    case 415: return `This file cannot be processed that way (${reason}). Upload it without "Strip metadata".`;
    case 429: return `Too many requests: wait ${retryAfter || "a few"} seconds, then try again.`;
    case 0: return "The connection failed: check your network and try again.";
    default: return reason || (status ? `failed (${status})` : "failed");
  }
}

// --- sign in ---------------------------------------------------------------------------------------

async function signIn() {
  if (!window.nostr) {
    $("no-signer").hidden = false;
    say("No Nostr signer found: install a NIP-07 extension, or use a signer's browser.", { error: true });
    return;
  }
  try {
    state.pubkey = await window.nostr.getPublicKey();
  } catch (err) {
    say(`The signer did not give a public key: ${err.message || err}`, { error: true });
    return;
  }
  $("who").textContent = npub(state.pubkey);
  $("who").title = state.pubkey;
  $("who").hidden = false;
  $("sign-in").hidden = true;
  $("sign-out").hidden = false;
  $("welcome").hidden = true;
  $("signed-in").hidden = false;
  $("strip-row").hidden = !(state.info && state.info.media);
  say("Signed in.");
  await refresh();
}

function signOut() {
  Object.assign(state, { pubkey: null, token: null, tokenExpires: 0, account: null, page: 0 });
  stopPolling();
  clearInterval(state.countdown);
  $("invoice").hidden = true;
  $("invoice-text").value = "";
  $("invoice-status").textContent = "";
  for (const id of ["qr", "uploads", "file-rows", "tx-rows"]) $(id).replaceChildren();
  $("who").hidden = true;
  $("sign-in").hidden = false;
  $("sign-out").hidden = true;
  $("welcome").hidden = false;
  $("signed-in").hidden = true;
  say("Signed out.");
}

// --- account ---------------------------------------------------------------------------------------

async function readAccount() {
  try {
    return await api("GET", "/account", { auth: await accountToken() });
  } catch (err) {
    if (!(err instanceof ApiFailure) || err.status !== 401) throw err;
    state.token = null; // refused (expired by the server's clock, say): sign a new one, once
    return api("GET", "/account", { auth: await accountToken() });
  }
}

async function refresh() {
  let account;
  try {
    account = await readAccount();
  } catch (err) {
    say(`Could not load the account: ${explain(err.status, reason(err), err.retryAfter)}`, { error: true });
    return null;
  }
  const before = state.account;
  state.account = account;
  renderAccount();
  // only what changed is drawn again, so a poll never takes the focus from a row or reloads previews
  if (!before || JSON.stringify(before.files) !== JSON.stringify(account.files)) renderFiles();
  if (!before || JSON.stringify(before.transactions) !== JSON.stringify(account.transactions)) renderTransactions();
  return account;
}

function renderAccount() {
  const a = state.account;
  $("stored").textContent = fmtBytes(a.storageTotal);
  $("credit").textContent = gbMonths(a.creditTotal);
  $("usage").textContent = `${Number(a.usageTotal).toPrecision(3)} GB-months`;
  $("paid-through").textContent = a.paidThrough ? fmtDate(a.paidThrough) : "no billable storage";
  // the figures as the server gave them, for scripts and tests
  Object.assign($("account").dataset, {
    storageTotal: a.storageTotal, creditTotal: a.creditTotal, usageTotal: a.usageTotal,
    paidThrough: a.paidThrough ?? "", files: a.files.length,
  });
  clearInterval(state.countdown);
  const tick = () => {
    $("countdown").textContent = a.paidThrough ? fmtSpan(a.paidThrough - now()) : "unlimited";
  };
  tick();
  state.countdown = setInterval(tick, 1000);
  updatePrice();
}

// --- buying storage --------------------------------------------------------------------------------

function updatePrice() {
  const a = state.account;
  const n = Number($("gb-months").value);
  if (!a || !Number.isInteger(n) || n < 1) { $("price").textContent = ""; return; }
  const usd = a.rateFiat.usd * n;
  const satsPerUsd = a.exchangeFiat && a.exchangeFiat.usd;
  $("price").textContent = satsPerUsd
    ? `≈ ${Math.ceil(usd * satsPerUsd).toLocaleString()} sats ($${usd.toFixed(2)})`
    : `$${usd.toFixed(2)}`;
}

function showInvoice(pr) {
  $("invoice").hidden = false;
  $("invoice-text").value = pr;
  $("open-wallet").href = `lightning:${pr}`;
  const qr = window.qrcode(0, "M");
  qr.addData(`lightning:${pr}`.toUpperCase(), "Alphanumeric");
  qr.make();
  const img = el("img", { src: qr.createDataURL(4, 8), alt: "" });
  $("qr").replaceChildren(img);
  $("webln-pay").hidden = !window.webln;
}

async function buy(event) {
  event.preventDefault();
  const n = Number($("gb-months").value);
  const button = $("get-invoice");
  button.disabled = true;
  $("invoice-status").textContent = "";
  try {
    const before = state.account ? state.account.creditTotal : 0;
    const offer = await api("GET", `/account/credit?${await v1Auth("Request Storage", [["gb_months", String(n)]])}`);
    const payment = await sign(offer.payment);
    const callback = new URL(offer.callback, location.href);
    const query = `amount=${offer.amount}&nostr=${encodeURIComponent(JSON.stringify(payment))}`;
    const invoice = await api("GET", `${callback.pathname}?${query}`);
    if (!invoice || invoice.status === "ERROR" || !invoice.pr) {
      throw new ApiFailure(400, (invoice && invoice.reason) || "no invoice was made");
    }
    showInvoice(invoice.pr);
    say(`Invoice for ${gbMonths(n)}: ${(offer.amount / 1000).toLocaleString()} sats.`);
    $("invoice-status").textContent = "Waiting for the payment…";
    startPolling(before);
  } catch (err) {
    say(`Could not get an invoice: ${explain(err.status, reason(err), err.retryAfter)}`, { error: true });
  } finally {
    button.disabled = false;
  }
}

function startPolling(before) {
  stopPolling();
  state.poll = setInterval(async () => {
    const a = await refresh();
    if (a && a.creditTotal > before) {
      stopPolling();
      $("invoice-status").textContent = `Paid. Your credit is now ${gbMonths(a.creditTotal)}.`;
      say("Payment received: storage bought.");
    }
  }, POLL_MS);
}

function stopPolling() {
  clearInterval(state.poll);
  state.poll = null;
}

async function payWithWebln() {
  try {
    await window.webln.enable();
    await window.webln.sendPayment($("invoice-text").value);
    $("invoice-status").textContent = "Paid from your wallet; waiting for the server to see it…";
  } catch (err) {
    say(`The wallet did not pay: ${reason(err)}`, { error: true });
  }
}

async function copy(text, what) {
  try {
    await navigator.clipboard.writeText(text);
    say(`${what} copied.`);
  } catch {
    say(`Could not copy the ${what.toLowerCase()}: select it and copy it by hand.`, { error: true });
  }
}

// --- uploads ---------------------------------------------------------------------------------------

async function sha256Hex(file) {
  const digest = await crypto.subtle.digest("SHA-256", await file.arrayBuffer());
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

function uploadRow(file) {
  const progress = el("progress", { max: 1, value: 0 });
  progress.setAttribute("aria-label", `Upload of ${file.name}`);
  const status = el("span", { className: "state" }, "Waiting…");
  const cancel = el("button", { type: "button", className: "secondary" }, "Cancel");
  cancel.setAttribute("aria-label", `Cancel the upload of ${file.name}`);
  const li = el("li", {}, el("span", { className: "name", title: file.name }, file.name), cancel, progress, status);
  $("uploads").append(li);
  return { li, progress, status, cancel };
}

async function uploadOne(file, row) {
  const strip = $("strip").checked && state.info && state.info.media && file.type.startsWith("image/");
  let url;
  const headers = { "Content-Type": file.type || "application/octet-stream" };
  row.status.textContent = "Waiting for the signature…";
  if (strip) {
    const sha = await sha256Hex(file);
    headers.Authorization = await blossomToken("media", [["x", sha]]);
    headers["X-SHA-256"] = sha;
    url = "/media";
  } else {
    url = `/item?${await v1Auth("Authorize Upload", [["name", file.name], ["size", String(file.size)]])}`;
  }
  return new Promise((resolve) => {
    const xhr = new XMLHttpRequest();
    const started = performance.now();
    xhr.open("PUT", url);
    for (const [key, value] of Object.entries(headers)) xhr.setRequestHeader(key, value);
    xhr.upload.onprogress = (e) => {
      if (!e.lengthComputable) return;
      row.progress.value = e.loaded / e.total;
      const speed = e.loaded / Math.max(0.001, (performance.now() - started) / 1000);
      row.status.textContent = `${fmtBytes(e.loaded)} of ${fmtBytes(e.total)} · ${fmtBytes(speed)}/s`;
    };
    const finish = (ok, text) => {
      row.li.classList.add(ok ? "done" : "failed");
      row.status.textContent = text;
      row.cancel.disabled = true;
      resolve(ok);
    };
    xhr.onload = () => {
      if (xhr.status >= 200 && xhr.status < 300) {
        row.progress.value = 1;
        const seconds = (performance.now() - started) / 1000;
        finish(true, `Done: ${fmtBytes(file.size)} in ${seconds.toFixed(1)} s${strip ? ", metadata stripped" : ""}.`);
        return;
      }
      let reason = xhr.getResponseHeader("X-Reason") || xhr.statusText;
      try { reason = JSON.parse(xhr.responseText).reason || reason; } catch { /* not JSON */ }
      finish(false, explain(xhr.status, reason, xhr.getResponseHeader("Retry-After")));
    };
    xhr.onerror = () => finish(false, explain(0));
    xhr.onabort = () => finish(false, "Cancelled.");
    row.cancel.onclick = () => xhr.abort();
    xhr.send(file);
  });
}

async function uploadAll(files) {
  const rows = [...files].map((file) => [file, uploadRow(file)]);
  let stored = 0;
  for (const [file, row] of rows) {
    try {
      if (await uploadOne(file, row)) stored += 1;
    } catch (err) {
      row.li.classList.add("failed");
      row.status.textContent = `Not uploaded: ${reason(err)}`;
    }
  }
  if (stored) {
    say(`${stored} file${stored === 1 ? "" : "s"} uploaded.`);
    await refresh();
  }
}

// --- files -----------------------------------------------------------------------------------------

function visibleFiles() {
  const files = state.account ? [...state.account.files] : [];
  const q = state.query.trim().toLowerCase();
  const shown = q
    ? files.filter((f) => [f.name, f.type, f.sha256, f.label || ""].some((v) => String(v).toLowerCase().includes(q)))
    : files;
  const { key, dir } = state.sort;
  shown.sort((a, b) => {
    const x = a[key];
    const y = b[key];
    const order = typeof x === "number" ? x - y : String(x).localeCompare(String(y));
    return order * dir || a.sha256.localeCompare(b.sha256);
  });
  return shown;
}

function preview(f) {
  if (f.type.startsWith("image/")) return el("img", { className: "preview", src: f.url, alt: "", loading: "lazy" });
  if (f.type.startsWith("video/")) return el("video", { className: "preview", src: f.url, preload: "metadata", muted: true });
  if (f.type.startsWith("audio/")) return el("audio", { className: "preview", src: f.url, preload: "none", controls: true });
  return el("span", { className: "mono" }, f.type.split("/")[1] || "file");
}

function actionButton(label, title, onClick) {
  const b = el("button", { type: "button", className: "secondary", title }, label);
  b.setAttribute("aria-label", title);
  b.addEventListener("click", onClick);
  return b;
}

function renderFiles() {
  const files = visibleFiles();
  const pages = Math.max(1, Math.ceil(files.length / PAGE_SIZE));
  state.page = Math.min(state.page, pages - 1);
  const slice = files.slice(state.page * PAGE_SIZE, (state.page + 1) * PAGE_SIZE);
  const total = state.account ? state.account.files.length : 0;
  $("file-count").textContent = files.length === total ? `(${total})` : `(${files.length} of ${total})`;
  const rows = slice.map((f) => {
    const torrent = el("a", { className: "button secondary", href: `/${f.sha256}.torrent`, download: `${f.sha256}.torrent` }, ".torrent");
    torrent.setAttribute("aria-label", `.torrent of ${f.name}`);
    // each name begins with the button's visible text (WCAG 2.5.3: "click Copy URL" works by voice)
    const actions = el("div", { className: "actions" },
      actionButton("Copy URL", `Copy URL of ${f.name}`, () => copy(f.url, "URL")),
      actionButton("Copy magnet", `Copy magnet of ${f.name}`, () => copy(f.magnet, "Magnet link")),
      torrent,
      actionButton("Delete", `Delete ${f.name}`, () => confirmDelete(f)));
    const name = el("td", { className: "name" }, el("a", { href: f.url, target: "_blank", rel: "noopener" }, f.name));
    if (f.label) name.append(el("span", { className: "label" }, f.label));
    const tr = el("tr", { dataset: { sha256: f.sha256 } },
      el("td", { className: "preview-cell" }, preview(f)),
      name,
      el("td", {}, fmtBytes(f.size)),
      el("td", { className: "mono" }, f.type),
      el("td", {}, fmtDate(f.created)),
      el("td", { className: "actions-cell" }, actions));
    return tr;
  });
  const focused = document.activeElement;
  const keep = $("file-rows").contains(focused) ? focused.getAttribute("aria-label") : null;
  $("file-rows").replaceChildren(...rows);
  if (keep) {
    const again = [...$("file-rows").querySelectorAll("[aria-label]")].find((e) => e.getAttribute("aria-label") === keep);
    if (again) again.focus();
  }
  $("page-info").textContent = `Page ${state.page + 1} of ${pages}`;
  $("prev-page").disabled = state.page === 0;
  $("next-page").disabled = state.page >= pages - 1;
  for (const th of document.querySelectorAll("#file-table th[aria-sort]")) {
    const key = th.querySelector("button").dataset.sort;
    th.setAttribute("aria-sort", key === state.sort.key ? (state.sort.dir > 0 ? "ascending" : "descending") : "none");
  }
}

let pendingDelete = null;

function confirmDelete(f) {
  pendingDelete = f;
  $("confirm-name").textContent = f.name;
  $("confirm-delete").showModal();
}

async function onConfirmClosed() {
  const f = pendingDelete;
  pendingDelete = null;
  if (!f || $("confirm-delete").returnValue !== "delete") return;
  const shown = [...$("file-rows").querySelectorAll("tr")].map((tr) => tr.dataset.sha256);
  const next = shown[shown.indexOf(f.sha256) + 1] || shown[shown.indexOf(f.sha256) - 1];
  try {
    await api("DELETE", `/item?${await v1Auth("Delete Item", [["sha256", f.sha256]])}`);
    say(`${f.name} deleted.`);
    await refresh();
    // the keyboard stays in the list: on the next file's Delete, or on the search box
    const row = next && $("file-rows").querySelector(`tr[data-sha256="${next}"]`);
    const target = row ? [...row.querySelectorAll("button")].find((b) => b.textContent === "Delete") : null;
    (target || $("search")).focus();
  } catch (err) {
    say(`Could not delete ${f.name}: ${explain(err.status, reason(err), err.retryAfter)}`, { error: true });
  }
}

// --- transactions ----------------------------------------------------------------------------------

function tag(event, name) {
  const found = event && event.tags ? event.tags.find((t) => t[0] === name) : null;
  return found ? found[1] : null;
}

function renderTransactions() {
  const rows = (state.account ? state.account.transactions : []).slice().reverse().map((t) => {
    if (t.type === "purchase") {
      const msat = Number(tag(t.order, "amount"));
      const id = el("span", { className: "mono", title: t.receipt.id }, `${t.receipt.id.slice(0, 12)}…`);
      return el("tr", {},
        el("td", {}, fmtDate(t.receipt.created_at)),
        el("td", {}, `${gbMonths(tag(t.order, "gb_months"))} bought`),
        el("td", {}, `${(msat / 1000).toLocaleString()} sats`),
        el("td", {}, id));
    }
    return el("tr", {},
      el("td", {}, fmtDate(t.created_at)),
      el("td", {}, `${t.type === "refund" ? "Refund" : "Credit"}: ${t.reason}`),
      el("td", {}, gbMonths(t.gbMonths)),
      el("td", {}, "–"));
  });
  if (!rows.length) rows.push(el("tr", {}, el("td", { colSpan: 4 }, "No purchases yet.")));
  $("tx-rows").replaceChildren(...rows);
}

// --- wiring ----------------------------------------------------------------------------------------

function wire() {
  $("sign-in").addEventListener("click", signIn);
  $("sign-out").addEventListener("click", signOut);
  $("buy-form").addEventListener("submit", buy);
  $("gb-months").addEventListener("input", updatePrice);
  $("copy-invoice").addEventListener("click", () => copy($("invoice-text").value, "Invoice"));
  $("webln-pay").addEventListener("click", payWithWebln);
  $("file-input").addEventListener("change", (e) => { uploadAll(e.target.files); e.target.value = ""; });
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer && e.dataTransfer.files.length) uploadAll(e.dataTransfer.files);
  });
  $("search").addEventListener("input", (e) => { state.query = e.target.value; state.page = 0; renderFiles(); });
  for (const button of document.querySelectorAll("#file-table th button")) {
    button.addEventListener("click", () => {
      const key = button.dataset.sort;
      state.sort = { key, dir: state.sort.key === key ? -state.sort.dir : key === "created" ? -1 : 1 };
      renderFiles();
    });
  }
  $("prev-page").addEventListener("click", () => { state.page -= 1; renderFiles(); });
  $("next-page").addEventListener("click", () => { state.page += 1; renderFiles(); });
  $("confirm-delete").addEventListener("close", onConfirmClosed);
}

async function start() {
  wire();
  try {
    state.info = await api("GET", "/");
  } catch (err) {
    say(`This server did not answer: ${err.message}`, { error: true });
  }
  // Extensions may inject window.nostr a moment after the page loads.
  if (!window.nostr) {
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
  $("no-signer").hidden = Boolean(window.nostr);
  document.body.dataset.ready = "true";
}

start();
