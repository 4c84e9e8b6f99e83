// Browser test of the page's PACS side: opened as a viewer's link would open it
// (/?sop_uid=UID), the page searches by that archived instance, offers "File in PACS" (the
// server was started with --report-to-pacs), and filing shows the new SR's UID, which it
// prints for crates/cli/tests/pacs.rs to read back from Orthanc. Passed: SIMCASE_URL (the
// page, http://ADDR/), SIMCASE_SOP (an indexed instance), SIMCASE_HITS (results expected).
import { check, withPage } from "./chromium.mjs";

const url = process.env.SIMCASE_URL;
const sop = process.env.SIMCASE_SOP;
const want = Number(process.env.SIMCASE_HITS);
if (!url || !sop || !want) throw new Error("set SIMCASE_URL, SIMCASE_SOP, SIMCASE_HITS");

await withPage({ width: 1280, height: 800 }, async (page, errors) => {
  page.setDefaultTimeout(60000);
  await page.goto(`${url}?sop_uid=${encodeURIComponent(sop)}&k=${want}`);
  await page.waitForFunction(() => /more like instance/.test(document.getElementById("status").textContent));
  const n = await page.locator("#results .card").count();
  check(n === want, `${want} results for the archived instance (got ${n})`);
  check(await page.isVisible("#report"), "'File in PACS' offered");
  await page.click("#report");
  await page.waitForFunction(() => /^Filed in the PACS: SR /.test(document.getElementById("report-status").textContent));
  const said = await page.textContent("#report-status");
  check(new RegExp(`, ${want} results$`).test(said), `the page says what was filed (${said})`);
  console.log("SR " + said.split("SR ")[1].split(",")[0]);
  // Another kind of query (a result's "more like this") is an item; it is offered too.
  await page.locator("#results .card").first().click();
  await page.waitForFunction(() => /more like item/.test(document.getElementById("status").textContent));
  check(await page.isVisible("#report"), "'File in PACS' offered for an indexed item");
  check(errors.length === 0, `no page errors (${errors.join("; ")})`);
});
