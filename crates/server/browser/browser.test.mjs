// Browser test of the page `simcase serve` embeds: headless Debian Chromium driven by
// playwright-core. Run by crates/cli/tests/serve.rs, which starts the server and passes:
//   SIMCASE_URL (the page URL the server printed, http://ADDR/#token=...), SIMCASE_IMAGE (a
//   PNG query), SIMCASE_SCREENSHOT (output path), CHROMIUM (default /usr/bin/chromium).
import { check, withPage } from "./chromium.mjs";

const url = process.env.SIMCASE_URL;
const image = process.env.SIMCASE_IMAGE;
const shot = process.env.SIMCASE_SCREENSHOT;
if (!url || !image || !shot) throw new Error("set SIMCASE_URL, SIMCASE_IMAGE, SIMCASE_SCREENSHOT");

await withPage({ width: 1280, height: 800 }, async (page, errors, ctx) => {
  page.setDefaultTimeout(60000);

  // The token flow: the page takes #token=... from its URL, keeps it in this tab's
  // sessionStorage, removes it from the address bar, and sends it on every API call.
  check(/#token=[0-9a-f]{64}$/.test(url), "the server printed a page URL with a token");
  const apiCalls = [];
  page.on("request", (r) => { if (new URL(r.url()).pathname.startsWith("/api/")) apiCalls.push(r); });
  await page.goto(url);
  await page.waitForFunction(() => /items · model/.test(document.getElementById("stats").textContent));
  check(/Give a query/.test(await page.textContent("#status")), "empty state shown before a query");
  check(!page.url().includes("token"), `token removed from the address bar (${page.url()})`);
  const token = url.split("#token=")[1];
  check(await page.evaluate(() => sessionStorage.getItem("simcase-token")) === token, "token kept in sessionStorage");
  check((await ctx.cookies()).length === 0, "no cookies");

  // Upload an image through the file picker: results with thumbnails, scores and a vote.
  await page.setInputFiles("#file", image);
  await page.waitForFunction(() => document.querySelectorAll("#results .card").length > 0);
  await page.waitForFunction(() => /for upload/.test(document.getElementById("status").textContent));
  const n = await page.locator("#results .card").count();
  check(n === 20, `20 results for the upload (got ${n})`);
  await page.waitForFunction(() => [...document.querySelectorAll("#results .thumb")].every((i) => i.complete && i.naturalWidth > 0));
  check((await page.locator("#vote .bar").count()) > 0, "label vote drawn as bars");
  const srcs = await page.locator("#results .thumb").evaluateAll((imgs) => imgs.map((i) => i.src));
  check(srcs.every((s) => s.startsWith("blob:")), "thumbnails are blob URLs (no token in any URL)");
  const auths = await Promise.all(apiCalls.map(async (r) => (await r.allHeaders())["authorization"]));
  check(apiCalls.length > 20 && auths.every((a) => a === `Bearer ${token}`)
    && apiCalls.every((r) => !r.url().includes(token)), `all ${apiCalls.length} API calls carry the bearer token, none in the URL`);
  const firstScore = await page.textContent("#results .card .score");
  check(/^#1 · 0\.\d{3}$/.test(firstScore.trim()), `first card shows rank and score (${firstScore})`);

  // Crop a region by dragging on the canvas, and search with just that region.
  const box = await page.locator("#query-canvas").boundingBox();
  check(box && box.width > 50, "query image drawn on the canvas");
  await page.mouse.move(box.x + box.width * 0.25, box.y + box.height * 0.25);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width * 0.7, box.y + box.height * 0.75, { steps: 5 });
  await page.mouse.up();
  check(await page.isEnabled("#crop-search"), "region selected, 'Search region' enabled");
  await page.click("#crop-search");
  await page.waitForFunction(() => /region\.png/.test(document.getElementById("status").textContent));
  check((await page.locator("#results .card").count()) > 0, "region search returned results");

  // Filter as a chip: only CT cases remain.
  await page.selectOption("#filter-add", "modality=CT");
  await page.waitForSelector("#chips .chip");
  await page.waitForFunction(() => /region\.png/.test(document.getElementById("status").textContent)
    && [...document.querySelectorAll("#results .card .meta")].every((m) => m.textContent.startsWith("CT/")));
  const metas = await page.locator("#results .card .meta").allTextContents();
  check(metas.length > 0 && metas.every((m) => m.startsWith("CT/")), `filter chip keeps only CT (${metas.length} cards)`);

  // Side-by-side view of the query and a result; Esc closes it.
  await page.locator("#results .card .actions button", { hasText: "Compare" }).first().click();
  await page.waitForSelector("#compare:not([hidden])");
  await page.waitForFunction(() => document.getElementById("cmp-result").naturalWidth > 0);
  await page.screenshot({ path: shot.replace(/\.png$/, "-compare.png") });
  await page.keyboard.press("Escape");
  check(await page.isHidden("#compare"), "compare dialog closes with Escape");

  // Keyboard: Enter on a result runs "more like this" from it.
  const firstId = await page.getAttribute("#results .card", "data-id");
  await page.focus("#results .card");
  await page.keyboard.press("Enter");
  await page.waitForFunction((id) => document.getElementById("status").textContent.includes(`more like item ${id}`), firstId);
  check(true, `Enter on a card searches more like item ${firstId}`);

  // Removing the chip widens the results again.
  await page.click("#chips .chip");
  await page.waitForFunction(() => document.querySelectorAll("#chips .chip").length === 0);
  await page.waitForFunction(() => !document.getElementById("status").classList.contains("loading"));

  // Re-ranking from its select: the search is sent again with rerank=kr and answers.
  check(await page.isHidden("#view-label"), "an index without views hides the view select");
  const reranked = page.waitForResponse((r) => r.url().includes("/api/search") && r.url().includes("rerank=kr"));
  await page.selectOption("#rerank", "kr");
  check((await reranked).status() === 200, "the re-rank select searches again with rerank=kr");
  await page.waitForFunction(() => !document.getElementById("status").classList.contains("loading"));
  check((await page.locator("#results .card").count()) > 0, "re-ranked results shown");
  await page.selectOption("#rerank", "");
  await page.waitForFunction(() => !document.getElementById("status").classList.contains("loading"));

  // An error state: an upload that is not an image.
  await page.setInputFiles("#file", { name: "notes.png", mimeType: "image/png", buffer: Buffer.from("not an image") });
  await page.waitForFunction(() => document.getElementById("status").classList.contains("error"));
  check(/notes\.png/.test(await page.textContent("#status")), "bad upload shows an error naming the file");

  // Back to a good result set for the screenshot.
  await page.setInputFiles("#file", image);
  await page.waitForFunction(() => /for upload/.test(document.getElementById("status").textContent));
  await page.waitForFunction(() => [...document.querySelectorAll("#results .thumb")].every((i) => i.complete && i.naturalWidth > 0));
  await page.screenshot({ path: shot });
  console.log("screenshot:", shot);
  const unexpected = errors.filter((e) => !/Failed to load resource.*400/.test(e));
  check(unexpected.length === 0, "no page errors (CSP violations included): " + JSON.stringify(unexpected));

  // A new tab without the token (sessionStorage is per tab) gets no data, and says why.
  const bare = await ctx.newPage();
  await bare.goto(url.split("#")[0]);
  await bare.waitForFunction(() => /index unavailable/.test(document.getElementById("stats").textContent));
  check(/token/.test(await bare.textContent("#stats")), "without the token the page shows no data and asks for it");
  await bare.close();
});
