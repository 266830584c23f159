// The browser client of examples/web, driven in headless Chromium against
// `chatctl dev`: two pages as two users exchange room and direct messages.
// A screenshot of alice's page is kept in target/test-artifacts/web-client.png.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { createWriteStream, mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { chromium } from "playwright-core";

const root = resolve(import.meta.dirname, "../..");
const artifacts = join(root, "target/test-artifacts");
const chromiumPath = process.env.CHROMIUM ?? "/usr/bin/chromium";
// Without the background-networking flags Chromium keeps dialling out, which a closed network refuses.
const chromiumFlags = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
  "--disable-component-update", "--disable-sync", "--no-first-run",
];

const devs = [];
let site;
// The AWS endpoint `chatctl dev` prints for the site's stack.
let siteEndpoint;
let browser;

/**
 * Starts `chatctl dev` on the binaries `cargo build --workspace --bins` made;
 * resolves with its web client URL (and calls `onEndpoint` with the AWS
 * endpoint it prints). Its stderr goes to target/test-artifacts/.
 */
function startDev(name, args, onEndpoint = () => {}) {
  mkdirSync(artifacts, { recursive: true });
  const log = createWriteStream(join(artifacts, `${name}-chatctl-dev.log`));
  const child = spawn(join(root, "target/debug/chatctl"),
    ["dev", "--port", "0", "--no-build", "--no-watch", ...args], {
      cwd: root,
      env: { ...process.env, HOME: mkdtempSync(join(tmpdir(), "chatctl-web-")), AWS_ACCESS_KEY_ID: "", AWS_SECRET_ACCESS_KEY: "" },
      stdio: ["ignore", "pipe", "pipe"],
    });
  child.stderr.pipe(log);
  devs.push(child);
  return new Promise((ready, fail) => {
    let web;
    createInterface({ input: child.stdout }).on("line", (line) => {
      web ??= line.match(/^Web client:\s+(\S+)/)?.[1];
      const endpoint = line.match(/^AWS endpoint:\s+(\S+)/)?.[1];
      if (endpoint) onEndpoint(endpoint);
      if (line.startsWith("Ready.")) ready(web);
    });
    child.on("exit", (code) => fail(new Error(`chatctl dev exited with ${code} before it was ready`)));
    setTimeout(() => fail(new Error("chatctl dev was not ready within 120 s")), 120_000).unref();
  });
}

before(async () => {
  site = await startDev("web-client", ["--stack", "webclient"], (endpoint) => (siteEndpoint = endpoint));
  browser = await chromium.launch({ executablePath: chromiumPath, args: chromiumFlags });
});

after(async () => {
  await browser?.close();
  for (const dev of devs.filter((d) => d.exitCode === null)) {
    const exited = new Promise((done) => dev.on("exit", done));
    dev.kill("SIGINT");
    assert.equal(await exited, 0, "chatctl dev exits 0 on Ctrl-C");
  }
});

/** A page signed in as `user` through the pre-filled form (in token mode, dev mints the token). */
async function signedIn(user, at = site) {
  const page = await browser.newPage({ viewport: { width: 1100, height: 700 } });
  page.on("pageerror", (error) => assert.fail(`page error for ${user}: ${error}`));
  await page.goto(`${at}?user=${user}`);
  // config.json arrives after the page has loaded.
  await page.waitForFunction(() => document.querySelector("#url").value !== "");
  assert.match(await page.inputValue("#url"), /^ws:\/\/127\.0\.0\.1:\d+\/\w+$/, "the URL is pre-filled");
  await page.click("#connect");
  await page.waitForSelector('#status[data-state="connected"]');
  assert.equal(await page.textContent("#current-room"), "lobby");
  return page;
}

async function send(page, text, to = "") {
  await page.fill("#to", to);
  await page.fill("#message", text);
  await page.click("#send");
}

/** The message with this text, once it is shown. */
function message(page, text) {
  return page.locator("#messages .message", { has: page.locator(".text", { hasText: text }) });
}

async function shown(page, text) {
  const found = message(page, text);
  await found.waitFor({ timeout: 10_000 });
  return { from: await found.getAttribute("data-from"), kind: await found.getAttribute("data-kind") };
}

test("two users chat in a room and directly, switch rooms and see history", async () => {
  const alice = await signedIn("alice");
  const bob = await signedIn("bob");

  await send(alice, "hello from alice");
  assert.deepEqual(await shown(alice, "hello from alice"), { from: "alice", kind: "room" }, "the sender gets it too");
  assert.deepEqual(await shown(bob, "hello from alice"), { from: "alice", kind: "room" });
  await send(bob, "hi alice, welcome to the lobby");
  assert.deepEqual(await shown(alice, "hi alice, welcome to the lobby"), { from: "bob", kind: "room" });

  await send(bob, "psst, alice", "alice");
  assert.deepEqual(await shown(alice, "psst, alice"), { from: "bob", kind: "direct" });
  assert.deepEqual(await shown(bob, "psst, alice"), { from: "bob", kind: "direct" });
  await alice.screenshot({ path: join(artifacts, "web-client.png") });

  // A room switch: messages there do not reach the lobby; joining loads the room's history.
  await alice.fill("#join-room", "general");
  await alice.click("#join");
  await alice.waitForFunction(() => document.querySelector("#current-room").textContent === "general");
  await send(alice, "anyone in general?");
  await shown(alice, "anyone in general?");
  await bob.waitForTimeout(700);
  assert.equal(await message(bob, "anyone in general?").count(), 0, "bob is still in the lobby");
  await bob.fill("#join-room", "general");
  await bob.click("#join");
  assert.deepEqual(await shown(bob, "anyone in general?"), { from: "alice", kind: "room" }, "history on join");

  // A direct message to someone who is not connected is refused with a clear error.
  await send(alice, "are you there?", "nobody");
  const error = alice.locator("#errors .error", { hasText: "unknown_recipient" });
  await error.waitFor({ timeout: 10_000 });

  await Promise.all([alice.close(), bob.close()]);
});

test("a forged token is refused with a clear message", async () => {
  const page = await browser.newPage();
  await page.goto(`${site}?user=mallory&token=not.a.token&autoconnect=1`);
  await page.waitForSelector('#status[data-state="disconnected"] >> text=/./');
  const error = page.locator("#errors .error", { hasText: /could not connect/i });
  await error.waitFor({ timeout: 10_000 });
  await page.close();
});

test("the page says why a token cannot be minted", async () => {
  const page = await browser.newPage();
  await page.goto(`${site}?user=${encodeURIComponent("not a valid name!")}&autoconnect=1`);
  const error = page.locator("#errors .error", { hasText: /invalid user/i });
  await error.waitFor({ timeout: 10_000 });
  assert.equal(await page.getAttribute("#status", "data-state"), "disconnected");
  await page.close();
});

test("with auth = \"none\" (examples/chatctl.demo.toml) the user name is enough", async () => {
  const demo = await startDev("web-client-demo", ["--config", join(root, "examples/chatctl.demo.toml")]);
  const config = await (await fetch(new URL("config.json", demo))).json();
  assert.equal(config.auth, "none");
  assert.match(config.url, /\/demo$/, "the demo config's stage");
  const carol = await signedIn("carol", demo);
  await send(carol, "no token needed");
  assert.deepEqual(await shown(carol, "no token needed"), { from: "carol", kind: "room" });
  await carol.close();
});

test("opened from disk with a URL and a token, as for a deployed stack", async () => {
  const config = await (await fetch(new URL("config.json", site))).json();
  const minted = await (await fetch(new URL("token.json?user=dave", site))).json();
  const page = await browser.newPage();
  page.on("pageerror", (error) => assert.fail(`page error: ${error}`));
  await page.goto(`file://${join(root, "examples/web/index.html")}`);
  assert.equal(await page.inputValue("#url"), "", "nothing is pre-filled off chatctl dev");
  await page.fill("#url", config.url);
  await page.fill("#token", minted.token);
  await page.click("#connect");
  await page.waitForSelector('#status[data-state="connected"]');
  await send(page, "from a file");
  assert.deepEqual(await shown(page, "from a file"), { from: "dave", kind: "room" });
  await page.close();
});

test("the page never mints a token for another server", async () => {
  const page = await browser.newPage();
  const minted = [];
  page.on("request", (request) => request.url().includes("token.json") && minted.push(request.url()));
  await page.goto(`${site}?url=${encodeURIComponent("ws://127.0.0.1:9/elsewhere")}&user=alice&autoconnect=1`);
  await page.locator("#errors .error", { hasText: /could not connect/i }).waitFor({ timeout: 10_000 });
  assert.deepEqual(minted, [], "no token was asked for");
  await page.close();
});

test("a failed handshake is tried again with backoff, as after weeks idle on AWS", async () => {
  // Every function starts Inactive: the first handshake fails at the
  // authorizer (500), the next at $connect (502); the page tries again.
  const idle = await startDev("web-client-inactive", ["--stack", "webidle", "--inactive-functions"]);
  const page = await browser.newPage();
  page.on("pageerror", (error) => assert.fail(`page error: ${error}`));
  await page.goto(`${idle}?user=erin`);
  await page.waitForFunction(() => document.querySelector("#url").value !== "");
  await page.click("#connect");
  const retrying = page.locator('#status[data-state="retrying"]');
  await retrying.waitFor({ timeout: 10_000 });
  assert.match(await retrying.textContent(), /The handshake failed; trying again in \d\.\d s \(attempt 2 of 5\)/);
  await page.waitForSelector('#status[data-state="connected"]', { timeout: 20_000 });
  assert.equal(await page.locator("#errors .error", { hasText: /could not connect/i }).count(), 0);
  // The first message of each route fails too (API Gateway's frame); the page says so.
  await send(page, "first after reactivation");
  await page.locator("#errors .error", { hasText: "server_error" }).first().waitFor({ timeout: 10_000 });
  await send(page, "second after reactivation");
  assert.deepEqual(await shown(page, "second after reactivation"), { from: "erin", kind: "room" });
  await page.close();
});

/** Runs chatctl against the site's stack in its emulator; resolves with stdout. */
function chatctl(args) {
  return new Promise((done, fail) => {
    const child = spawn(join(root, "target/debug/chatctl"), [...args, "--stack", "webclient", "--endpoint-url", siteEndpoint], {
      env: { ...process.env, AWS_ACCESS_KEY_ID: "", AWS_SECRET_ACCESS_KEY: "" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    let err = "";
    child.stdout.on("data", (chunk) => (out += chunk));
    child.stderr.on("data", (chunk) => (err += chunk));
    child.on("exit", (code) => (code === 0 ? done(out) : fail(new Error(`chatctl ${args.join(" ")}: ${code}\n${err}`))));
  });
}

async function joinRoom(page, room) {
  await page.fill("#join-room", room);
  await page.click("#join");
  await page.waitForFunction((r) => document.querySelector("#current-room").textContent === r, room);
}

test("a connection the server cuts is resumed: what came meanwhile shows once, in order", async () => {
  const frank = await signedIn("frank");
  const grace = await signedIn("grace");
  // What frank's page sends on the connections it opens from now on (the resumed one).
  const asked = [];
  frank.on("websocket", (ws) => ws.on("framesent", ({ payload }) => asked.push(JSON.parse(payload))));
  await joinRoom(frank, "resume");
  await joinRoom(grace, "resume");
  await send(grace, "before the cut");
  await shown(frank, "before the cut");

  // As API Gateway's idle timeout or 2-hour lifetime would: the server closes frank's connection.
  await chatctl(["connections", "kick", "--user", "frank"]);
  const reconnecting = frank.locator('#status[data-state="reconnecting"]');
  await reconnecting.waitFor({ timeout: 10_000 });
  assert.match(await reconnecting.textContent(), /reconnecting in \d\.\d s/);
  for (const n of [1, 2, 3]) await send(grace, `while frank was away ${n}`);
  await shown(grace, "while frank was away 3");

  await frank.waitForSelector('#status[data-state="connected"]', { timeout: 15_000 });
  assert.equal(await frank.textContent("#current-room"), "resume", "back in the room it was in");
  await shown(frank, "while frank was away 3");
  const texts = await frank.locator("#messages .message .text").allTextContents();
  const ours = texts.filter((t) => t === "before the cut" || t.startsWith("while frank was away"));
  assert.deepEqual(ours, ["before the cut", "while frank was away 1", "while frank was away 2", "while frank was away 3"],
    "each once, in order");
  assert.equal(await frank.locator("#errors .error").count(), 0, "a cut the page recovers from is no error");
  const resumed = asked.filter((frame) => frame.action === "getmessages" && frame.after);
  assert.equal(resumed.length >= 1, true, "the page asked for what came after its newest message");
  assert.equal(asked.filter((f) => f.action === "getmessages" && !f.after && !f.with).length, 0,
    "the room was not reloaded from scratch");

  await send(frank, "back again");
  await shown(grace, "back again");
  await Promise.all([frank.close(), grace.close()]);
});

test("a quiet page keeps its connection past the idle timeout with pings API Gateway answers", async () => {
  // The idle timeout shortened to 2 s (API Gateway's is 10 min): the page pings.
  const quiet = await startDev("web-client-keepalive", ["--stack", "webquiet", "--idle-timeout", "2s"]);
  const page = await browser.newPage();
  page.on("pageerror", (error) => assert.fail(`page error: ${error}`));
  const sockets = [];
  const pongs = [];
  page.on("websocket", (ws) => {
    sockets.push(ws);
    ws.on("framereceived", ({ payload }) => payload === '{"type":"pong"}' && pongs.push(payload));
  });
  await page.goto(`${quiet}?user=heidi`);
  await page.waitForFunction(() => document.querySelector("#url").value !== "");
  await page.click("#connect");
  await page.waitForSelector('#status[data-state="connected"]');
  // Four pongs: about four seconds, two idle timeouts, without a message.
  const deadline = Date.now() + 15_000;
  while (pongs.length < 4 && Date.now() < deadline) await new Promise((tick) => setTimeout(tick, 100));
  assert.ok(pongs.length >= 4, `pings were answered: ${pongs.length} pongs`);
  assert.equal(await page.getAttribute("#status", "data-state"), "connected");
  assert.equal(sockets.length, 1, "never cut, never reconnected");
  assert.equal(await page.locator("#errors .error").count(), 0, "a pong is no error");
  await send(page, "still here");
  assert.deepEqual(await shown(page, "still here"), { from: "heidi", kind: "room" });
  await page.close();
});

test("with auth = \"oidc\" the page asks for the identity provider's token", async () => {
  const dir = mkdtempSync(join(tmpdir(), "chatctl-oidc-"));
  const config = join(dir, "chatctl.toml");
  // An issuer nobody answers for: dev serves the stack all the same (its authorizer would refuse every token).
  writeFileSync(config, 'stack = "weboidc"\nauth = "oidc"\n[oidc]\nissuer = "http://127.0.0.1:9"\naudience = "app"\nuser_claim = "email"\n');
  const oidc = await startDev("web-client-oidc", ["--config", config]);
  const served = await (await fetch(new URL("config.json", oidc))).json();
  assert.equal(served.auth, "oidc");
  assert.equal(served.user_claim, "email");
  assert.equal(served.token_endpoint, undefined, "dev mints no token for an identity provider's stack");
  const page = await browser.newPage();
  page.on("pageerror", (error) => assert.fail(`page error: ${error}`));
  await page.goto(`${oidc}?user=ivan&autoconnect=1`);
  const error = page.locator("#errors .error", { hasText: /identity provider/ });
  await error.waitFor({ timeout: 10_000 });
  assert.equal(await page.getAttribute("#status", "data-state"), "disconnected");
  await page.close();
});

test("a load report opens in Chromium with its charts drawn", async () => {
  const report = join(artifacts, "load-report.html");
  const summary = await chatctl(["load", "--users", "6", "--rooms", "2", "--rate", "60", "--direct", "20",
    "--duration", "4s", "--slo", "p99<5s,lost=0", "--report", report]);
  assert.match(summary, /Lost 0, duplicated 0, out of order 0/);
  const page = await browser.newPage({ viewport: { width: 840, height: 1400 } });
  page.on("pageerror", (error) => assert.fail(`page error: ${error}`));
  await page.goto(`file://${report}`);
  // Four charts: latency over time, messages per second, two histograms.
  const charts = page.locator("svg");
  assert.equal(await charts.count(), 4);
  for (const chart of await charts.all()) {
    const box = await chart.boundingBox();
    assert.ok(box.width > 700 && box.height > 200, "each chart is drawn at its size");
  }
  const lines = await page.locator("svg polyline").evaluateAll((all) => all.map((l) => l.points.numberOfItems));
  assert.ok(lines.some((points) => points > 1), `latency lines have points: ${lines}`);
  const bars = await page.locator("svg rect").evaluateAll((all) => all.map((r) => r.getBBox().height));
  assert.ok(bars.some((height) => height > 0), "histogram bars have height");
  assert.match(await page.textContent("body"), /p99<5s\s*[\d.]+\s*met/);
  await page.screenshot({ path: join(artifacts, "load-report.png"), fullPage: true });
  await page.close();
});
