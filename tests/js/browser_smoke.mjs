#!/usr/bin/env node
// Real-browser smoke test of the hub's dashboard (static/), using playwright-core
// driving Debian's Chromium (no browser download).
//
//   node browser_smoke.mjs --url URL --email E --password P --module MC-1001-STN [--screenshot out.png]
//
// Steps: open the page; log in with a wrong password and expect #login-error; log in
// correctly; wait (30 s) until the module's row shows status "online"; record its
// reading cells; wait (30 s) until any reading cell changes text; optional screenshot.
// stdout: one JSON line, {"kind":"ok",...} (exit 0) or {"kind":"fail","message":...} (exit 1).
// CHROMIUM_PATH overrides /usr/bin/chromium. Debug output goes to stderr.

import { parseArgs } from "node:util";
import { chromium } from "playwright-core";

const STEP_DEADLINE_MS = 30_000;

function debug(...args) {
  console.error("[browser_smoke]", ...args);
}

function finish(obj, code) {
  process.stdout.write(JSON.stringify(obj) + "\n", () => process.exit(code));
  setTimeout(() => process.exit(code), 2000).unref();
}

function parseCli() {
  const { values } = parseArgs({
    options: {
      url: { type: "string" },
      email: { type: "string" },
      password: { type: "string" },
      module: { type: "string" },
      screenshot: { type: "string" },
    },
    strict: true,
    allowPositionals: false,
  });
  for (const k of ["url", "email", "password", "module"]) {
    if (!values[k]) throw new Error(`missing --${k}`);
  }
  return values;
}

/* Runs in the page (self-contained: Playwright serialises it). With `before` null it
 * returns the row once it is online with at least one reading; with `before` a map of
 * reading texts it returns the first reading whose text differs. With `peek` it just
 * returns the row's current state (for error messages). */
function probeRow([moduleId, before, peek]) {
  const row = Array.from(document.querySelectorAll("[data-module-id]")).find(
    (n) => n.getAttribute("data-module-id") === moduleId,
  );
  if (!row) return peek ? { found: false } : null;
  const statusEl = row.querySelector('[data-role="status"]');
  const status = statusEl ? (statusEl.textContent || "").trim() : null;
  const readings = {};
  for (const cell of row.querySelectorAll("[data-reading]")) {
    readings[cell.getAttribute("data-reading")] = (cell.textContent || "").trim();
  }
  if (peek) return { found: true, status, readings };
  if (!before) {
    return status === "online" && Object.keys(readings).length > 0 ? { status, readings } : null;
  }
  for (const [name, text] of Object.entries(readings)) {
    if (name in before && before[name] !== text) {
      return { name, before: before[name], after: text, status, readings };
    }
  }
  return null;
}

async function main() {
  const args = parseCli();
  const started = Date.now();
  const consoleErrors = [];
  let browser;
  try {
    browser = await chromium.launch({
      executablePath: process.env.CHROMIUM_PATH || "/usr/bin/chromium",
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
      ],
      timeout: STEP_DEADLINE_MS,
    });
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const page = await context.newPage();
    page.setDefaultTimeout(STEP_DEADLINE_MS);
    page.on("console", (msg) => {
      if (msg.type() === "error") consoleErrors.push(msg.text());
      debug(`console.${msg.type()}:`, msg.text());
    });
    page.on("pageerror", (err) => {
      consoleErrors.push(String(err && err.message ? err.message : err));
      debug("pageerror:", err);
    });

    // 1. open the page: the login form must appear (no session yet)
    const response = await page.goto(args.url, { waitUntil: "domcontentloaded" });
    if (!response || !response.ok()) {
      throw new Error(`GET ${args.url} answered ${response ? response.status() : "nothing"}`);
    }
    await page.locator("#email").waitFor({ state: "visible" });

    // 2. wrong password shows #login-error
    await page.fill("#email", args.email);
    await page.fill("#password", `${args.password}-wrong`);
    await page.click("#login-button");
    const loginError = page.locator("#login-error");
    await loginError.waitFor({ state: "visible" });
    await page.waitForFunction(() => {
      const n = document.getElementById("login-error");
      return n && (n.textContent || "").trim().length > 0;
    });
    const loginErrorText = ((await loginError.textContent()) || "").trim();
    debug("wrong password ->", loginErrorText);

    // 3. correct password
    await page.fill("#password", args.password);
    await page.click("#login-button");

    // 4. the module row shows "online" and at least one reading cell
    let first;
    try {
      const handle = await page.waitForFunction(probeRow, [args.module, null, false], {
        timeout: STEP_DEADLINE_MS,
        polling: 100,
      });
      first = await handle.jsonValue();
    } catch (err) {
      const now = await page.evaluate(probeRow, [args.module, null, true]).catch(() => null);
      throw new Error(
        `module ${args.module} not shown online with readings within ${STEP_DEADLINE_MS} ms; row now: ${JSON.stringify(now)}`,
      );
    }
    const firstName = Object.keys(first.readings)[0];
    const firstText = first.readings[firstName];
    const onlineAfterMs = Date.now() - started;
    debug("online; readings:", first.readings);

    // 5. any reading cell of that row changes text
    let changed;
    try {
      const handle = await page.waitForFunction(probeRow, [args.module, first.readings, false], {
        timeout: STEP_DEADLINE_MS,
        polling: 100,
      });
      changed = await handle.jsonValue();
    } catch (err) {
      const now = await page.evaluate(probeRow, [args.module, null, true]).catch(() => null);
      throw new Error(
        `no reading of ${args.module} changed within ${STEP_DEADLINE_MS} ms; before ${JSON.stringify(first.readings)}, now ${JSON.stringify(now)}`,
      );
    }
    debug("changed:", changed);

    const header = await page.evaluate(() => ({
      user: (document.getElementById("user-name")?.textContent || "").trim(),
      connection: document.getElementById("connection")?.dataset.state || null,
    }));

    if (args.screenshot) await page.screenshot({ path: args.screenshot, fullPage: true });

    await browser.close();
    browser = null;
    finish(
      {
        kind: "ok",
        module: args.module,
        loginError: loginErrorText,
        user: header.user,
        connection: header.connection,
        firstReading: { name: firstName, text: firstText },
        changed: { name: changed.name, before: changed.before, after: changed.after },
        readings: changed.readings,
        onlineAfterMs,
        elapsedMs: Date.now() - started,
        consoleErrors,
        screenshot: args.screenshot || null,
      },
      0,
    );
  } finally {
    if (browser) await browser.close().catch(() => {});
  }
}

main().catch((err) => {
  finish({ kind: "fail", message: String(err && err.message ? err.message : err) }, 1);
});
