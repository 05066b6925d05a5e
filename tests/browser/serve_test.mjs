// The inkgrad serve page in a real browser: Debian's chromium driven by playwright-core (no
// browser download). Starts `inkgrad serve` on an untrained tiny checkpoint made here, types a
// prompt, moves the sliders, generates, and checks the PNGs, the previews, the attention view
// (one map per prompt word), cancelling, an error on the page and the phone layout; saves
// docs/images/serve.png.
// Usage: node serve_test.mjs [--inkgrad PATH] [--maker PATH] [--screenshot PATH]
//        [--checkpoint FILE]   (a trained diffusion checkpoint instead of the untrained one, for
//                               the README's screenshot; the checks are the same)
import { spawn, execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "../..");
const option = (name, fallback) => {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : fallback;
};
const inkgrad = option("--inkgrad", path.join(root, "build/apps/inkgrad"));
const maker = option("--maker", path.join(root, "build/tests/make_tiny_checkpoint"));
const screenshot = option("--screenshot", path.join(root, "docs/images/serve.png"));
const chromiumPath = process.env.CHROMIUM || "/usr/bin/chromium";

let failures = 0;
function check(condition, what) {
  console.log((condition ? "ok   " : "FAIL ") + what);
  if (!condition) failures++;
}

// Width, height and tEXt chunks of PNG bytes (checking the signature and every chunk's length).
function readPng(bytes) {
  const signature = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  if (bytes.length < 33 || !bytes.subarray(0, 8).equals(signature)) return null;
  const out = { width: bytes.readUInt32BE(16), height: bytes.readUInt32BE(20), text: {}, iend: false };
  for (let at = 8; at + 12 <= bytes.length;) {
    const length = bytes.readUInt32BE(at);
    const type = bytes.toString("latin1", at + 4, at + 8);
    if (type === "tEXt") {
      const data = bytes.subarray(at + 8, at + 8 + length);
      const nul = data.indexOf(0);
      out.text[data.toString("latin1", 0, nul)] = data.toString("latin1", nul + 1);
    }
    if (type === "IEND") out.iend = true;
    at += 12 + length;
  }
  return out;
}

const work = fs.mkdtempSync(path.join(os.tmpdir(), "inkgrad-browser-"));
const checkpoint = option("--checkpoint", path.join(work, "tiny.safetensors"));
if (!fs.existsSync(checkpoint)) execFileSync(maker, [checkpoint], { stdio: "inherit" });

const server = spawn(inkgrad, ["serve", "--checkpoint", checkpoint, "--port", "0", "--threads", "1"],
                     { stdio: ["ignore", "pipe", "inherit"] });
let serverOut = "";
const url = await new Promise((resolve, reject) => {
  const timer = setTimeout(() => reject(new Error("inkgrad serve printed no address in 30 s")), 30000);
  server.stdout.on("data", (chunk) => {
    serverOut += chunk;
    const match = serverOut.match(/open (http:\/\/127\.0\.0\.1:\d+\/)/);
    if (match) { clearTimeout(timer); resolve(match[1]); }
  });
  server.on("exit", (code) => reject(new Error("inkgrad serve exited with " + code)));
});
console.log("server at " + url);

const context = await chromium.launchPersistentContext(path.join(work, "profile"), {
  executablePath: chromiumPath,
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"],
  viewport: { width: 1100, height: 760 },
});
// Only the server: any other request is a bug (a CDN, a font).
await context.route(/.*/, (route) => {
  if (route.request().url().startsWith(url)) return route.continue();
  console.log("FAIL request outside the server: " + route.request().url());
  failures++;
  return route.abort();
});
const page = context.pages()[0] || (await context.newPage());
page.on("pageerror", (error) => { console.log("FAIL page error: " + error.message); failures++; });

try {
  await page.goto(url);
  await page.waitForSelector("#examples button");
  check((await page.locator("#examples button").count()) === 9, "the nine trained prompts are offered as examples");
  await page.locator("#examples button", { hasText: "vertical line" }).first().click();
  check((await page.inputValue("#prompt")) === "vertical line", "an example fills the prompt");
  await page.fill("#prompt", "");
  await page.locator("#prompt").pressSequentially("circle");

  // The sliders, moved with the keyboard as a user would.
  await page.focus("#steps");
  await page.keyboard.press("Home");
  for (let i = 0; i < 10; i++) await page.keyboard.press("ArrowRight");
  check((await page.inputValue("#steps")) === "20", "the steps slider moved to 20");
  check((await page.textContent("#steps-value")) === "20", "the steps value is shown");
  await page.focus("#guidance");
  await page.keyboard.press("Home");
  for (let i = 0; i < 4; i++) await page.keyboard.press("ArrowRight");
  check((await page.inputValue("#guidance")) === "3", "the guidance slider moved to 3");
  await page.selectOption("#sampler", "euler");
  await page.fill("#count", "3");
  await page.click("#random-seed");
  check(/^\d+$/.test(await page.inputValue("#seed")), "random fills a seed");
  await page.fill("#seed", "42");

  // Record when previews and final pictures appear in the grid.
  await page.evaluate(() => {
    window.__timeline = [];
    new MutationObserver((records) => {
      for (const record of records) {
        const img = record.target.tagName === "IMG" ? record.target : null;
        if (img) window.__timeline.push(img.closest(".tile").classList.contains("final") ? "final" : "preview");
        for (const node of record.addedNodes || []) {
          if (node.classList && node.classList.contains("final")) window.__timeline.push("final");
        }
      }
    }).observe(document.getElementById("grid"), { subtree: true, childList: true, attributes: true, attributeFilter: ["src"] });
  });
  await page.click("#generate");
  check((await page.textContent("#generate")) === "Cancel", "Generate turns into Cancel while running");
  await page.waitForFunction(() => document.querySelectorAll("#grid a.tile.final img").length === 3 &&
                                   [...document.querySelectorAll("#grid a.tile.final img")].every((i) => i.complete && i.naturalWidth > 0),
                             null, { timeout: 120000 });
  check((await page.textContent("#generate")) === "Generate", "the button is Generate again");
  const sizes = await page.$$eval("#grid a.tile.final img", (images) => images.map((i) => [i.naturalWidth, i.naturalHeight]));
  check(sizes.length === 3 && sizes.every(([w, h]) => w === 28 && h === 28), "3 pictures decoded by the browser at 28x28: " + JSON.stringify(sizes));
  const links = await page.$$eval("#grid a.tile.final", (as) => as.map((a) => [a.href, a.download]));
  for (const [href, name] of links) {
    const png = readPng(Buffer.from(href.split(",")[1], "base64"));
    const settings = png && png.text["inkgrad.settings"] ? JSON.parse(png.text["inkgrad.settings"]) : {};
    check(png && png.iend && png.width === 28 && png.height === 28, "download " + name + " is a whole 28x28 PNG");
    check(settings.prompt === "circle" && settings.seed === 42 && settings.steps === 20 &&
          settings.guidance === 3 && settings.sampler === "euler" && settings.model === "diffusion",
          "its text chunk holds the settings: " + JSON.stringify(settings));
  }
  const timeline = await page.evaluate(() => window.__timeline);
  const firstFinal = timeline.indexOf("final");
  const previews = timeline.filter((t) => t === "preview").length;
  check(firstFinal > 0 && timeline.slice(0, firstFinal).every((t) => t === "preview") && previews >= 3 * 5,
        `previews arrived before the final pictures (${previews} preview updates, then the pictures)`);
  check((await page.getAttribute("#progress", "aria-valuenow")) === "100", "the progress bar is full");
  const rendering = await page.$eval("#grid img", (img) => getComputedStyle(img).imageRendering);
  check(rendering === "pixelated", "pictures are upscaled with image-rendering: pixelated");
  const shown = await page.$eval("#grid img", (img) => img.getBoundingClientRect().width);
  check(shown >= 112, "pictures are shown upscaled (" + Math.round(shown) + " px wide)");
  // The attention view of the first picture: the null token and the one word "circle".
  check(await page.isVisible("#attention-view"), "the attention view appears after the pictures");
  const circleWords = await page.$$eval("#attention-words .attention-word", (fs) => fs.map((f) => [f.dataset.word, f.classList.contains("null")]));
  check(JSON.stringify(circleWords) === JSON.stringify([["(null)", true], ["circle", false]]),
        "its maps are the null token's and the word's: " + JSON.stringify(circleWords));
  check((await page.locator("#attention-picks .attention-pick").count()) === 3, "a chooser for each of the 3 pictures");
  await page.waitForTimeout(400);  // let the progress bar finish its transition
  fs.mkdirSync(path.dirname(screenshot), { recursive: true });
  await page.screenshot({ path: screenshot });
  console.log("wrote " + screenshot);

  // Cancel: a long generation stops when the button is pressed.
  await page.fill("#count", "16");
  await page.focus("#steps");
  await page.keyboard.press("End");
  await page.click("#generate");
  await page.waitForFunction(() => /step \d+ of 100/.test(document.getElementById("status").textContent), null, { timeout: 60000 });
  await page.click("#generate");
  await page.waitForFunction(() => document.getElementById("generate").textContent === "Generate", null, { timeout: 30000 });
  check((await page.textContent("#status")) === "cancelled", "Cancel stops the generation");
  const answer = await page.evaluate(async () => (await fetch("/api/info")).status);
  check(answer === 200, "the server answers after a cancel");

  // An invalid request shows the server's error on the page.
  await page.fill("#seed", "not-a-seed");
  await page.click("#generate");
  await page.waitForSelector("#error:not([hidden])", { timeout: 30000 });
  const error = await page.textContent("#error");
  check(/seed must be an integer/.test(error), "an invalid seed shows the server's error: " + error);
  await page.fill("#seed", "42");
  await page.fill("#prompt", "12345");
  await page.click("#generate");
  await page.waitForFunction(() => /prompt/.test(document.getElementById("error").textContent), null, { timeout: 30000 });
  check(true, "a prompt with no known character shows an error: " + (await page.textContent("#error")));

  // The attention view of a prompt of three words: one map per word (and the null token's).
  await page.fill("#prompt", "two vertical lines");
  await page.fill("#count", "2");
  await page.focus("#steps");
  await page.keyboard.press("Home");
  await page.click("#generate");
  await page.waitForFunction(() => !document.getElementById("attention-view").hidden &&
                                   [...document.querySelectorAll("#attention-words img.heat")].every((i) => i.complete && i.naturalWidth > 0) &&
                                   document.querySelectorAll("#attention-words img.heat").length > 0,
                             null, { timeout: 120000 });
  const words = await page.$$eval("#attention-words .attention-word:not(.null)", (fs) => fs.map((f) => f.dataset.word));
  check(JSON.stringify(words) === JSON.stringify(["two", "vertical", "lines"]), "one attention map per prompt word: " + JSON.stringify(words));
  check((await page.locator("#attention-words .attention-word.null").count()) === 1, "and one for the null token");
  const heatSizes = await page.$$eval("#attention-words img.heat", (images) => images.map((i) => [i.naturalWidth, i.naturalHeight]));
  check(heatSizes.length === 4 && heatSizes.every(([w, h]) => w === 28 && h === 28), "the maps are decoded 28x28 PNGs: " + JSON.stringify(heatSizes));
  const heatStyle = await page.$eval("#attention-words img.heat", (img) => [getComputedStyle(img).imageRendering, img.getBoundingClientRect().width]);
  check(heatStyle[0] === "pixelated" && heatStyle[1] >= 56, "the maps are upscaled crisp (" + JSON.stringify(heatStyle) + ")");
  const shares = await page.$$eval("#attention-words figcaption span", (spans) => spans.map((s) => s.textContent));
  check(shares.length === 4 && shares.every((t) => /^\d+(\.\d)?%$/.test(t)), "each map shows its share of the attention: " + JSON.stringify(shares));
  const firstMap = await page.$eval("#attention-words img.heat", (img) => img.src);
  await page.click("#attention-picks .attention-pick:nth-child(2)");
  check((await page.getAttribute("#attention-picks .attention-pick:nth-child(2)", "aria-pressed")) === "true", "the chooser switches to picture 2");
  const secondMap = await page.$eval("#attention-words img.heat", (img) => img.src);
  check(secondMap !== firstMap && (await page.locator("#attention-words .attention-word").count()) === 4,
        "picture 2 has its own maps, one per word again");
  await page.fill("#attention-opacity", "0.3");
  const opacity = await page.$eval("#attention-words img.heat", (img) => getComputedStyle(img).opacity);
  check(opacity === "0.3", "the overlay slider sets the maps' opacity (" + opacity + ")");

  // A phone's width: one column, nothing wider than the screen.
  await page.setViewportSize({ width: 390, height: 844 });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(overflow <= 0, "no horizontal scrolling at 390 px (overflow " + overflow + " px)");
  const columns = await page.evaluate(() => getComputedStyle(document.querySelector("main")).gridTemplateColumns.split(" ").length);
  check(columns === 1, "one column at a phone's width");
  const attentionRight = await page.$$eval("#attention-words .attention-word", (fs) => Math.max(...fs.map((f) => f.getBoundingClientRect().right)));
  check(attentionRight <= 390 && (await page.isVisible("#attention-view")), "the attention view fits a phone's width (right edge " + Math.round(attentionRight) + " px)");
  await page.screenshot({ path: screenshot.replace(/\.png$/, "_phone.png"), fullPage: true });
} catch (error) {
  console.log("FAIL " + (error.stack || error));
  failures++;
} finally {
  await context.close();
  server.kill("SIGTERM");
  const code = await new Promise((resolve) => server.on("exit", (c) => resolve(c)));
  check(code === 0 && /stopped/.test(serverOut), "SIGTERM stops the server cleanly (exit " + code + ")");
  fs.rmSync(work, { recursive: true, force: true });
}
console.log(failures === 0 ? "browser test: all passed" : `browser test: ${failures} failure(s)`);
process.exit(failures === 0 ? 0 : 1);
