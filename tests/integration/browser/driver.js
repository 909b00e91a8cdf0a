// driver.js: headless Chromium (playwright-core, the system /usr/bin/chromium) driven over stdio.
//   node driver.js <user-data-dir>
// Reads one JSON command per line and answers one JSON line {"ok":true,"value":...} or
// {"ok":false,"error":"..."}. Commands:
//   {"cmd":"goto","url":...}              load a page (waits for the load event)
//   {"cmd":"eval","expr":...}             evaluate a JavaScript expression in the page, JSON value back
//   {"cmd":"wait","expr":...,"timeout":s} wait until the expression is truthy
//   {"cmd":"screenshot","path":...}       PNG of the viewport
//   {"cmd":"console"}                     console errors, uncaught page errors and HTTP errors so far
//   {"cmd":"close"}                       close the browser and exit
"use strict";
const readline = require("readline");
const { chromium } = require("playwright-core");

const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const userDataDir = process.argv[2];
const ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--disable-dev-shm-usage"];
const reply = (o) => process.stdout.write(JSON.stringify(o) + "\n");

async function main() {
  // a persistent context is how playwright takes --user-data-dir (a throwaway profile here)
  const ctx = await chromium.launchPersistentContext(userDataDir, {
    executablePath, headless: true, args: ARGS, viewport: { width: 1100, height: 640 },
    timeout: 90000,    // only bounds a failure: Chromium starts slowly on a loaded machine
  });
  const page = ctx.pages()[0] || await ctx.newPage();
  const problems = [];
  page.on("console", (m) => {
    if (m.type() !== "error") return;
    const loc = m.location && m.location();
    problems.push("console: " + m.text() + (loc && loc.url ? " (" + loc.url + ")" : ""));
  });
  page.on("response", (r) => { if (r.status() >= 400) problems.push("http " + r.status() + ": " + r.url()); });
  page.on("pageerror", (e) => problems.push("pageerror: " + (e && e.message)));
  reply({ ok: true, value: "ready" });

  const rl = readline.createInterface({ input: process.stdin });
  for await (const line of rl) {
    let c;
    try {
      c = JSON.parse(line);
      let value = null;
      if (c.cmd === "goto") {
        const r = await page.goto(c.url, { waitUntil: "load", timeout: 60000 });
        value = r ? r.status() : null;
      } else if (c.cmd === "eval") {
        value = await page.evaluate(c.expr);
      } else if (c.cmd === "wait") {
        await page.waitForFunction(c.expr, null, { timeout: (c.timeout || 10) * 1000, polling: 50 });
        value = true;
      } else if (c.cmd === "screenshot") {
        await page.screenshot({ path: c.path, fullPage: !!c.full });
        value = c.path;
      } else if (c.cmd === "console") {
        value = problems.slice();
      } else if (c.cmd === "close") {
        reply({ ok: true, value: null });
        break;
      } else {
        throw new Error("unknown command " + c.cmd);
      }
      reply({ ok: true, value: value === undefined ? null : value });
    } catch (e) {
      reply({ ok: false, error: String(e && e.stack || e) });
    }
  }
  await ctx.close();
}

main().then(() => process.exit(0), (e) => { reply({ ok: false, error: String(e && e.stack || e) }); process.exit(1); });
