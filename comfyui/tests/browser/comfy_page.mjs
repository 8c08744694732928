// What ui.mjs and restore.mjs share: the request from the command line, and the real ComfyUI frontend opened in
// Debian's headless chromium (no browser download), with page errors on stderr, closed whatever happens.
//
//   const { url, request } = commandLine();
//   const report = await withComfyPage(url, () => <page ready?>, async (page) => { ...; return report; });
import { chromium } from "playwright-core";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

// Only guards against a page that never gets there; every wait ends as soon as its condition holds.
export const DEADLINE_MS = 180000;

// `node <script> <comfyui url> <request.json>`: the URL and the parsed request.
export function commandLine() {
  const [url, requestPath] = process.argv.slice(2);
  return { url, request: JSON.parse(readFileSync(requestPath, "utf8")) };
}

// Opens `url` in a fresh profile, waits until `ready` (evaluated in the page) holds, and returns what `body(page)`
// returns; the browser is closed afterwards, also when `body` throws.
export async function withComfyPage(url, ready, body) {
  const browser = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), "luna-chromium-")), {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync",
    ],
  });
  try {
    const page = browser.pages()[0] || (await browser.newPage());
    page.on("pageerror", (e) => process.stderr.write(`pageerror: ${e}\n`));
    page.on("console", (m) => m.type() === "error" && process.stderr.write(`console: ${m.text()}\n`));
    await page.goto(url, { waitUntil: "load", timeout: DEADLINE_MS });
    await page.waitForFunction(ready, null, { timeout: DEADLINE_MS });
    return await body(page);
  } finally {
    await browser.close();
  }
}
