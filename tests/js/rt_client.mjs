#!/usr/bin/env node
// A real socket.io-client "dashboard" for the hub's Rust end-to-end tests.
//
//   node rt_client.mjs --url http://127.0.0.1:PORT --email E --password P [--page modules] [--no-login]
//
// stdout: one JSON object per line, nothing else:
//   {"kind":"login","status":200}
//   {"kind":"connect"}
//   {"kind":"connect_error","message":"..."}
//   {"kind":"event","event":"rt_module_online","data":{...},"offset":42}
//   {"kind":"disconnect","reason":"..."}
//   {"kind":"fatal","message":"..."}          (then exit code 2)
// Exits 0 when stdin closes. Debug output goes to stderr.

import { parseArgs } from "node:util";
import { io } from "socket.io-client";

let exiting = false;

function emit(obj) {
  if (exiting) return;
  try {
    // Pipes and files are written synchronously by Node on Linux, so each line is
    // flushed before the next statement runs.
    process.stdout.write(JSON.stringify(obj) + "\n");
  } catch (err) {
    debug("stdout write failed:", err && err.message);
  }
}

function debug(...args) {
  if (process.env.RT_CLIENT_DEBUG) console.error("[rt_client]", ...args);
}

function exitWith(code) {
  if (exiting) return;
  exiting = true;
  // Let any pending stdout data drain, then leave.
  process.stdout.write("", () => process.exit(code));
  setTimeout(() => process.exit(code), 500).unref();
}

function fatal(message) {
  emit({ kind: "fatal", message: String(message) });
  exitWith(2);
}

process.stdout.on("error", (err) => {
  // The reader went away (EPIPE): nothing more to say.
  debug("stdout error:", err.code);
  exiting = true;
  process.exit(0);
});

process.on("uncaughtException", (err) => fatal(`uncaught exception: ${err && err.stack ? err.stack : err}`));
process.on("unhandledRejection", (err) => fatal(`unhandled rejection: ${err && err.stack ? err.stack : err}`));

function parseCli() {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        url: { type: "string" },
        email: { type: "string" },
        password: { type: "string" },
        page: { type: "string", default: "modules" },
        "no-login": { type: "boolean", default: false },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    fatal(`bad arguments: ${err.message}`);
    return null;
  }
  if (!values.url) {
    fatal("missing --url");
    return null;
  }
  if (!values["no-login"] && (values.email === undefined || values.password === undefined)) {
    fatal("missing --email/--password (or pass --no-login)");
    return null;
  }
  return values;
}

function setCookieHeaders(headers) {
  if (typeof headers.getSetCookie === "function") return headers.getSetCookie();
  const raw = headers.get("set-cookie");
  // Fallback: split a folded header on commas that start a new "name=" pair.
  return raw ? raw.split(/,(?=\s*[^;,=\s]+=)/) : [];
}

async function login(baseUrl, email, password) {
  let res;
  try {
    res = await fetch(new URL("/api/auth/login", baseUrl), {
      method: "POST",
      headers: { "content-type": "application/json", accept: "application/json" },
      body: JSON.stringify({ email, password }),
      redirect: "manual",
    });
  } catch (err) {
    fatal(`login request failed: ${err.cause ? err.cause.message || err.cause : err.message}`);
    return null;
  }
  emit({ kind: "login", status: res.status });
  const text = await res.text().catch(() => "");
  if (res.status !== 200) {
    fatal(`login failed with HTTP ${res.status}: ${text}`);
    return null;
  }
  for (const header of setCookieHeaders(res.headers)) {
    const pair = header.split(";", 1)[0].trim();
    const eq = pair.indexOf("=");
    if (eq > 0 && pair.slice(0, eq).trim() === "mc_session") {
      return `mc_session=${pair.slice(eq + 1).trim()}`;
    }
  }
  fatal("login succeeded but no mc_session cookie was set");
  return null;
}

async function main() {
  const args = parseCli();
  if (!args) return;

  // Exit 0 once the test drops our stdin.
  process.stdin.on("end", () => exitWith(0));
  process.stdin.on("close", () => exitWith(0));
  process.stdin.on("error", () => exitWith(0));
  process.stdin.resume();

  let cookie = null;
  if (!args["no-login"]) {
    cookie = await login(args.url, args.email, args.password);
    if (!cookie || exiting) return;
  }

  const opts = {
    transports: ["websocket"],
    auth: { page: args.page },
    reconnection: false,
  };
  if (cookie) opts.extraHeaders = { cookie };

  const socket = io(args.url, opts);
  socket.on("connect", () => emit({ kind: "connect" }));
  socket.on("connect_error", (err) => emit({ kind: "connect_error", message: err && err.message ? err.message : String(err) }));
  socket.on("disconnect", (reason) => emit({ kind: "disconnect", reason: String(reason) }));
  // Events carry (payload, offset) (docs/REALTIME.md); rt_session carries only its payload.
  socket.onAny((event, data, offset) => {
    const line = { kind: "event", event, data: data === undefined ? null : data };
    if (typeof offset === "number") line.offset = offset;
    emit(line);
  });
  debug("connecting to", args.url, "page", args.page, cookie ? "with cookie" : "without cookie");
}

main().catch((err) => fatal(err && err.stack ? err.stack : String(err)));
