// What both browser tests share: headless Debian Chromium (CHROMIUM, default
// /usr/bin/chromium) in a throwaway profile, one page that collects page errors and console
// errors, and `check`, which prints each passed check and throws on the first failure.
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export function check(cond, what) {
  if (!cond) throw new Error("check failed: " + what);
  console.log("ok -", what);
}

// Runs `body(page, errors, ctx)` with a fresh browser of `viewport`, then closes it and
// removes its profile, whether or not `body` throws.
export async function withPage(viewport, body) {
  const profile = mkdtempSync(join(tmpdir(), "simcase-chromium-"));
  const ctx = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    viewport,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  try {
    const page = ctx.pages()[0] || (await ctx.newPage());
    const errors = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
    await body(page, errors, ctx);
  } finally {
    await ctx.close();
    rmSync(profile, { recursive: true, force: true });
  }
}
