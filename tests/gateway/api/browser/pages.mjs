// Drives the member and DSO pages in headless Chromium (playwright-core), as a phone
// (390 px wide): the member signs in with a key kept in the page and places an order signed
// in the browser (the test checks the chain meanwhile, see handshake), sees it in the book,
// her open orders and the band chart, and cancels it again; the DSO signs in through an
// EIP-1193 wallet and sees the OCM status, the feeder drawing and the bands. Saves a
// screenshot of each page. Run by tests/gateway/api/test_web_pages.py.
//
// Environment: LEC_URL, LEC_MEMBER_KEY, LEC_DSO_KEY (hex private keys: the script hands them
// to the page only), LEC_SLOT (the slot to order in), LEC_FLEX, LEC_SCREENSHOTS (a folder),
// LEC_CHROMIUM (the browser). Prints one JSON line with what it saw; exits 1 on failure.

import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import { createInterface } from "node:readline";
import { join } from "node:path";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const url = env("LEC_URL");
const memberKey = env("LEC_MEMBER_KEY");
const dsoKey = env("LEC_DSO_KEY");
const slot = env("LEC_SLOT");
const flex = process.env.LEC_FLEX || "BAT01";
const shots = env("LEC_SCREENSHOTS");
const TIMEOUT = 20_000;
const WIDTH = Number(process.env.LEC_WIDTH || 390); // a phone; LEC_WIDTH=1200 to look at the wide layout
const PHONE = WIDTH < 600;
const device = { viewport: { width: WIDTH, height: PHONE ? 844 : 900 }, deviceScaleFactor: 2, isMobile: PHONE, hasTouch: PHONE };

const seen = {};
const problems = [];

function assert(condition, message) {
  if (!condition) throw new Error(message);
}

function bare(key) {
  return key.replace(/^0x/, "").toLowerCase();
}

/** Fails the run when a page logs an error or sends a key anywhere. */
function watch(page, keys) {
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  page.on("console", (message) => {
    if (message.type() === "error" && !/status of (401|403|404|409|422)/.test(message.text())) {
      problems.push(`console error: ${message.text()}`);
    }
  });
  page.on("request", (request) => {
    const text = `${request.url()} ${request.postData() ?? ""} ${JSON.stringify(request.headers())}`.toLowerCase();
    for (const key of keys) if (text.includes(bare(key))) problems.push(`a private key left the page in ${request.method()} ${request.url()}`);
  });
}

const stdin = createInterface({ input: process.stdin });
const lines = stdin[Symbol.asyncIterator]();

/** Tells the test something (one JSON line) and waits for its "go" on stdin. */
async function handshake(message) {
  console.log(JSON.stringify(message));
  const { value } = await lines.next();
  assert(value?.trim() === "go", `the test answered ${value}`);
}

async function noHorizontalScroll(page, what) {
  const { scroll, client } = await page.evaluate(() => ({
    scroll: document.documentElement.scrollWidth,
    client: document.documentElement.clientWidth,
  }));
  assert(scroll <= client, `${what}: the page scrolls sideways (${scroll} px content in ${client} px)`);
}

async function signIn(page, key) {
  await page.getByLabel("Private key").fill(key);
  await page.getByRole("button", { name: "Sign in with key" }).click();
  await page.getByRole("button", { name: "Sign out" }).waitFor({ state: "visible" });
}

async function memberPage(browser) {
  const context = await browser.newContext(device);
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  watch(page, [memberKey, dsoKey]);
  await page.goto(`${url}/member`);
  await page.getByRole("heading", { name: "Sign in" }).waitFor();
  assert(await page.getByText("never sent to the server").isVisible(), "the page does not say where the key stays");
  await signIn(page, memberKey);
  seen.member_address = await page.locator("#who-address").getAttribute("title");

  // the order: buy for the flexibility in the chosen slot, signed in the browser
  const slotSelect = page.getByLabel("Delivery slot");
  await page.locator(`#order-slot option[value="${slot}"]`).waitFor({ state: "attached" });
  await slotSelect.selectOption(slot);
  // first an order the band does not allow: refused before anything is signed, in plain words
  await page.getByRole("radio", { name: "Sell" }).check();
  await page.locator(`#order-asset option[value="flexibility:${flex}"]`).waitFor({ state: "attached" });
  await page.getByLabel("Asset").selectOption(`flexibility:${flex}`);
  await page.getByLabel("Energy (kWh)").fill("50");
  await page.getByLabel("Limit price (tokens/kWh)").fill("0.10");
  await page.getByRole("button", { name: "Sign and place order" }).click();
  const refusal = page.locator("#order-status").filter({ hasText: /^Not placed/ });
  await refusal.waitFor();
  seen.refusal = (await refusal.textContent()).trim();
  assert(/outside the band/.test(seen.refusal), `an order outside the band: ${seen.refusal}`);

  await page.getByRole("radio", { name: "Buy" }).check();
  await page.getByLabel("Energy (kWh)").fill("0.5");
  await page.getByLabel("Limit price (tokens/kWh)").fill("0.25");
  await page.getByRole("button", { name: "Sign and place order" }).click();
  const status = page.locator("#order-status");
  await status.filter({ hasText: /Order placed|Not placed|failed|waiting/ }).waitFor({ timeout: 45_000 });
  await page.waitForFunction(() => !/Signing|waiting|Preparing/.test(document.querySelector("#order-status").textContent), null, { timeout: 45_000 });
  seen.order_status = (await status.textContent()).trim();
  assert(/^Order placed/.test(seen.order_status), `the order was not placed: ${seen.order_status}`);

  // the order in the book (bids) and in my open orders
  const bids = page.getByRole("table", { name: /Bids/ });
  await bids.getByRole("row").filter({ hasText: flex }).filter({ hasText: "you" }).first().waitFor();
  const open = page.getByRole("table", { name: "My open orders" });
  const row = open.getByRole("row").filter({ hasText: flex }).first();
  await row.waitFor();
  const cancel = row.getByRole("button", { name: /Cancel order \d+/ });
  seen.open_order = (await cancel.getAttribute("aria-label")).replace("Cancel order ", "");
  await handshake({ placed: seen.open_order }); // the test checks the chain while the order is open

  // the band chart: an SVG image with the shaded band
  const chart = page.getByRole("img", { name: new RegExp(`Band of ${flex}`) });
  await chart.waitFor();
  const bandPath = await chart.locator("path.band").first().getAttribute("d");
  assert(bandPath && bandPath.length > 10, "the band chart has no band");
  seen.band_chart = true;
  if (process.env.LEC_EXPECT_SCHEDULE) {
    // a part of the order traded: the schedule shows as a step line in the slot
    await page.waitForFunction((name) => {
      const chart = document.querySelector(`#chart-${name} svg`);
      return chart && [...chart.querySelectorAll("path.step")].some((p) => (p.getAttribute("d") || "").length > 5);
    }, flex);
    seen.schedule_line = true;
  }
  await page.waitForFunction(() => !document.querySelector("#balance .empty"));

  await noHorizontalScroll(page, "member page");
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: join(shots, "member.png"), fullPage: true });

  // cancel it again, signed in the browser too
  await page.getByRole("button", { name: `Cancel order ${seen.open_order}` }).click();
  await page.locator("#cancel-status").filter({ hasText: /cancelled|Not cancelled|failed/ }).waitFor({ timeout: 45_000 });
  seen.cancel_status = (await page.locator("#cancel-status").textContent()).trim();
  assert(/cancelled; /.test(seen.cancel_status), `the order was not cancelled: ${seen.cancel_status}`);
  await page.getByRole("button", { name: `Cancel order ${seen.open_order}` }).waitFor({ state: "detached" });
  await context.close();
}

async function dsoPage(browser) {
  const context = await browser.newContext(device);
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  watch(page, [memberKey, dsoKey]);
  // the DSO signs in with a browser wallet: a minimal EIP-1193 provider in the page (its key
  // lives in the page only), so the page offers "Sign in with your browser wallet"
  await page.addInitScript(({ key }) => {
    const calls = [];
    window.__walletCalls = calls;
    window.ethereum = {
      async request({ method, params }) {
        calls.push(method);
        const wallet = new window.ethers.Wallet(key);
        if (method === "eth_requestAccounts" || method === "eth_accounts") return [wallet.address];
        if (method === "personal_sign") {
          if (window.ethers.getAddress(params[1]) !== wallet.address) throw new Error("wrong account");
          return wallet.signMessage(window.ethers.getBytes(params[0]));
        }
        throw Object.assign(new Error(`unsupported ${method}`), { code: 4200 });
      },
    };
  }, { key: dsoKey });
  await page.goto(`${url}/dso`);
  await page.getByRole("heading", { name: "Sign in" }).waitFor();
  await page.getByRole("button", { name: "Sign in with your browser wallet" }).click();
  await page.getByRole("button", { name: "Sign out" }).waitFor({ state: "visible" });
  seen.dso_wallet_calls = await page.evaluate(() => window.__walletCalls);
  assert(seen.dso_wallet_calls.includes("personal_sign"), "the wallet was not asked to sign");

  const feeder = page.getByRole("img", { name: /Feeder/ });
  await feeder.waitFor();
  seen.feeder_buses = await feeder.locator("g.bus").count();
  seen.feeder_branches = await feeder.locator(".branch").count();
  assert(seen.feeder_buses > 0, "the feeder drawing has no buses");
  await page.getByText(/Feasible/).first().waitFor();
  await page.getByText("Buses and branches as a table").click();  // the table is folded away
  const busTable = page.getByRole("table", { name: "Bus voltages (pu)" });
  await busTable.getByRole("columnheader", { name: "L1" }).waitFor();
  seen.phase_columns = (await busTable.getByRole("columnheader").allTextContents()).slice(4);
  await page.getByText("Buses and branches as a table").click();  // folded again for the screenshot

  const bands = page.locator("#dso-bands");
  await bands.getByRole("img", { name: /Band of / }).first().waitFor();
  seen.band_charts = await bands.getByRole("img", { name: /Band of / }).count();
  await page.waitForFunction(() => !document.querySelector("#limitations .loading, #violations .loading"));

  await noHorizontalScroll(page, "DSO page");
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: join(shots, "dso.png"), fullPage: true });
  await context.close();
}

const browser = await chromium.launch({
  executablePath: process.env.LEC_CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
let failure = null;
try {
  mkdirSync(shots, { recursive: true });
  await memberPage(browser);
  await dsoPage(browser);
} catch (error) {
  failure = error;
} finally {
  await browser.close();
}
if (failure) problems.unshift(failure.stack || String(failure));
console.log(JSON.stringify({ ok: problems.length === 0, seen, problems }));
stdin.close();
process.exit(problems.length ? 1 : 0);
