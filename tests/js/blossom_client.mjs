// A Nostr web app's Blossom calls, made with blossom-client-sdk and a nostr-tools signer, for the tests.
//
//   node tests/js/blossom_client.mjs <command> --server <url> --secret <hex> [options]
//
// Commands (each is one high-level call of the SDK, with auth signed only when the server asks for it):
//   upload   --file <path> [--type <mime>]              Actions.uploadBlob     -> blob descriptor
//   has      --sha256 <hex>                             Actions.hasBlob        -> true | false
//   list     [--pubkey <hex>] [--limit N] [--cursor X] [--since T] [--until T]
//                                                       Actions.listBlobs      -> [descriptor, ...]
//   mirror   --descriptor <json> | --url <url> [--sha256 <hex>] --size N [--type <mime>]
//                                                       Actions.mirrorBlob     -> blob descriptor
//   delete   --sha256 <hex>                             Actions.deleteBlob     -> true
//   all      --file <path> [--type <mime>] --other-server <url>
//            upload, has, list, mirror to the other server, delete, has on both, in one process
//
// Other options:
//   --server-tag   sign tokens with a ["server", <hostname>] tag, as apps that scope their tokens do
//   --auth-first   send the token with the first request instead of waiting for a 401 (the SDK's auth: true)
//   --timeout MS   per request (default 20000)
//   --trace        print every request the SDK makes and the status it got, on stderr
//
// Prints one JSON line on stdout: the SDK's result, or {"error": {"status", "reason", "step"}} (status is
// null when the SDK failed without an HTTP status, e.g. on a 5xx to HEAD /upload, or a 402 it cannot pay)
// and then exits 1. Exit 2: wrong arguments.

import { readFile } from "node:fs/promises";
import { basename } from "node:path";
import { parseArgs } from "node:util";

import {
  Actions,
  createDeleteAuth,
  createListAuth,
  createMirrorAuth,
  createUploadAuth,
  getHashFromURL,
} from "blossom-client-sdk";
import { finalizeEvent, getPublicKey } from "nostr-tools/pure";
import { hexToBytes } from "nostr-tools/utils";

const COMMANDS = ["upload", "has", "list", "mirror", "delete", "all"];

class UsageError extends Error {}

function options() {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      server: { type: "string" },
      "other-server": { type: "string" },
      secret: { type: "string" },
      file: { type: "string" },
      type: { type: "string" },
      sha256: { type: "string" },
      url: { type: "string" },
      size: { type: "string" },
      descriptor: { type: "string" },
      pubkey: { type: "string" },
      limit: { type: "string" },
      cursor: { type: "string" },
      since: { type: "string" },
      until: { type: "string" },
      timeout: { type: "string", default: "20000" },
      "server-tag": { type: "boolean", default: false },
      "auth-first": { type: "boolean", default: false },
      trace: { type: "boolean", default: false },
    },
  });
  if (positionals.length !== 1 || !COMMANDS.includes(positionals[0]))
    throw new UsageError(`one command expected, of: ${COMMANDS.join(", ")}`);
  for (const name of ["server", "secret"]) if (!values[name]) throw new UsageError(`--${name} is required`);
  if (!/^[0-9a-f]{64}$/.test(values.secret)) throw new UsageError("--secret must be 64 lowercase hex characters");
  return { command: positionals[0], ...values };
}

function need(opts, name) {
  if (opts[name] === undefined) throw new UsageError(`--${name} is required for ${opts.command}`);
  return opts[name];
}

function integer(opts, name) {
  if (opts[name] === undefined) return undefined;
  const value = Number(opts[name]);
  if (!Number.isSafeInteger(value)) throw new UsageError(`--${name} must be an integer`);
  return value;
}

/** What a web app's signer does (window.nostr.signEvent), here with a secret key held by nostr-tools. */
function makeSigner(secretHex) {
  const secret = hexToBytes(secretHex);
  return async (draft) => finalizeEvent(draft, secret);
}

/** Logs each request the SDK makes (it calls the global fetch) without changing it. */
function traceFetch() {
  const original = globalThis.fetch;
  globalThis.fetch = async (input, init = {}) => {
    const headers = Object.fromEntries(new Headers(init.headers ?? {}).entries());
    if (headers.authorization?.startsWith("Nostr ")) {
      const token = headers.authorization.slice(6).replace(/-/g, "+").replace(/_/g, "/");
      const event = JSON.parse(Buffer.from(token, "base64").toString("utf8"));
      headers.authorization = `Nostr <kind ${event.kind}, tags ${JSON.stringify(event.tags)}>`;
    }
    const body = init.body;
    const bodyInfo =
      body === undefined || body === null
        ? ""
        : typeof body === "string"
          ? ` body=${body}`
          : ` body=<${body.constructor?.name} ${body.size ?? body.length} bytes${body.type ? `, type ${body.type}` : ""}>`;
    const response = await original(input, init);
    const reason = response.headers.get("x-reason");
    console.error(
      `${init.method ?? "GET"} ${input} ${JSON.stringify(headers)}${bodyInfo} -> ${response.status}` +
        (reason ? ` X-Reason: ${reason}` : ""),
    );
    return response;
  };
}

class StepError extends Error {
  constructor(step, cause) {
    super(cause?.message ?? String(cause));
    this.step = step;
    this.cause = cause;
  }
}

async function step(name, call) {
  try {
    return await call();
  } catch (error) {
    throw new StepError(name, error);
  }
}

function client(opts) {
  const signer = makeSigner(opts.secret);
  const timeout = integer(opts, "timeout");
  const auth = opts["auth-first"] ? true : undefined;
  // The tag names the server by hostname (the SDK's own normalisation drops scheme and port).
  const scope = (server) => (opts["server-tag"] ? { servers: server } : {});
  return {
    pubkey: getPublicKey(hexToBytes(opts.secret)),

    async upload(server, path, type) {
      const bytes = await readFile(path);
      // A browser hands the SDK a File; its type is what the app (or the browser) says the file is.
      const file = new File([bytes], basename(path), type ? { type } : {});
      return Actions.uploadBlob(server, file, {
        auth,
        timeout,
        onAuth: (server, sha256, authType) =>
          createUploadAuth(signer, sha256, { type: authType, ...scope(server) }),
      });
    },

    has(server, sha256) {
      return Actions.hasBlob(server, sha256, { timeout });
    },

    list(server, pubkey, page) {
      return Actions.listBlobs(server, pubkey, {
        auth,
        timeout,
        ...page,
        onAuth: (server) => createListAuth(signer, scope(server)),
      });
    },

    mirror(server, descriptor) {
      return Actions.mirrorBlob(server, descriptor, {
        auth,
        timeout,
        onAuth: (server, sha256) => createMirrorAuth(signer, sha256, scope(server)),
      });
    },

    remove(server, sha256) {
      return Actions.deleteBlob(server, sha256, {
        auth,
        timeout,
        onAuth: (server, sha256) => createDeleteAuth(signer, sha256, scope(server)),
      });
    },
  };
}

function descriptorFrom(opts) {
  if (opts.descriptor !== undefined) {
    try {
      return JSON.parse(opts.descriptor);
    } catch {
      throw new UsageError("--descriptor must be JSON");
    }
  }
  const url = need(opts, "url");
  const sha256 = opts.sha256 ?? getHashFromURL(url);
  if (!sha256) throw new UsageError("--sha256 is required when the URL has no hash in it");
  const size = integer(opts, "size");
  if (size === undefined) throw new UsageError("--size is required for mirror (the SDK sends it as X-Content-Length)");
  return { url, sha256, size, type: opts.type, uploaded: 0 };
}

async function run(opts) {
  const sdk = client(opts);
  const server = opts.server;
  switch (opts.command) {
    case "upload": {
      const file = need(opts, "file");
      return step("upload", () => sdk.upload(server, file, opts.type));
    }
    case "has": {
      const sha256 = need(opts, "sha256");
      return step("has", () => sdk.has(server, sha256));
    }
    case "list": {
      const page = {
        cursor: opts.cursor,
        limit: integer(opts, "limit"),
        since: integer(opts, "since"),
        until: integer(opts, "until"),
      };
      return step("list", () => sdk.list(server, opts.pubkey ?? sdk.pubkey, page));
    }
    case "mirror": {
      const descriptor = descriptorFrom(opts);
      return step("mirror", () => sdk.mirror(server, descriptor));
    }
    case "delete": {
      const sha256 = need(opts, "sha256");
      return step("delete", () => sdk.remove(server, sha256));
    }
    case "all": {
      const other = need(opts, "other-server");
      const file = need(opts, "file");
      const result = {};
      result.upload = await step("upload", () => sdk.upload(server, file, opts.type));
      const sha256 = result.upload.sha256;
      result.has = await step("has", () => sdk.has(server, sha256));
      result.list = await step("list", () => sdk.list(server, sdk.pubkey, {}));
      result.mirror = await step("mirror", () => sdk.mirror(other, result.upload));
      result.delete = await step("delete", () => sdk.remove(server, sha256));
      result.has_after_delete = await step("has after delete", () => sdk.has(server, sha256));
      result.other_has_after_delete = await step("has on the other server", () => sdk.has(other, sha256));
      return result;
    }
  }
}

function failure(error) {
  const cause = error instanceof StepError ? error.cause : error;
  // fetch's own failures ("fetch failed") carry what went wrong in their cause (ECONNREFUSED, ...).
  const detail = cause?.cause?.code ?? cause?.cause?.message;
  return {
    error: {
      status: typeof cause?.status === "number" ? cause.status : null,
      reason: (cause?.message ?? String(cause)) + (detail ? ` (${detail})` : ""),
      step: error instanceof StepError ? error.step : null,
    },
  };
}

let opts;
try {
  opts = options();
} catch (error) {
  console.error(`blossom_client: ${error.message}`);
  process.exit(2);
}
if (opts.trace) traceFetch();
try {
  console.log(JSON.stringify(await run(opts)));
} catch (error) {
  if (error instanceof UsageError) {
    console.error(`blossom_client: ${error.message}`);
    process.exit(2);
  }
  console.log(JSON.stringify(failure(error)));
  process.exitCode = 1;
}
