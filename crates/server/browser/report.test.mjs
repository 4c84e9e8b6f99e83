// Browser test of the page `simcase report` writes: headless Debian Chromium driven by
// playwright-core opens index.html from disk and checks that it is self-contained (no request
// but the page itself), raises no console error, and shows its figures and thumbnails. Run by
// crates/cli/tests/report.rs, which passes:
//   SIMCASE_REPORT (the report's index.html), SIMCASE_SCREENSHOT (output PNG, the top of the
//   page), SIMCASE_MIN_FIGURES (figures expected inline), CHROMIUM (default /usr/bin/chromium).
import { pathToFileURL } from "node:url";
import { check, withPage } from "./chromium.mjs";

const report = process.env.SIMCASE_REPORT;
const shot = process.env.SIMCASE_SCREENSHOT;
const minFigures = Number(process.env.SIMCASE_MIN_FIGURES || "1");
if (!report || !shot) throw new Error("set SIMCASE_REPORT, SIMCASE_SCREENSHOT");

await withPage({ width: 1400, height: 900 }, async (page, errors) => {
  const url = pathToFileURL(report).href;
  const requests = [];
  page.on("request", (r) => requests.push(r.url()));
  await page.goto(url, { waitUntil: "load" });
  const others = requests.filter((u) => u !== url && !u.startsWith("data:"));
  check(others.length === 0, `no request but the page itself (others: ${JSON.stringify(others)})`);
  const figures = await page.locator("figure svg").count();
  check(figures >= minFigures, `${figures} figures inline as SVG (want >= ${minFigures})`);
  const sized = await page.locator("figure svg").evaluateAll((s) => s.every((e) => e.getBoundingClientRect().width > 200));
  check(sized, "every figure is laid out at a readable width");
  const imgs = await page.locator("img").evaluateAll((is) => is.map((i) => [i.src.slice(0, 22), i.complete && i.naturalWidth > 0]));
  check(imgs.length > 0 && imgs.every(([s, ok]) => s.startsWith("data:image/png") && ok),
    `${imgs.length} thumbnails are inline PNGs that decode`);
  check(await page.locator("h1").count() === 1, "one title");
  await page.screenshot({ path: shot });
  check(errors.length === 0, `no console errors (${JSON.stringify(errors)})`);
});
