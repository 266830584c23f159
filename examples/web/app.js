// A browser client for chatctl's WebSocket chat: plain DOM APIs, no build step.
// All user-provided text reaches the page through textContent, never innerHTML.
"use strict";

const ROOM_RE = /^[A-Za-z0-9_-]{1,64}$/;
const HISTORY_LIMIT = 50;
const ERROR_TTL_MS = 10000;
const MAX_ERRORS = 5;
const REFUSED =
  "Could not connect: the server refused the connection (check the URL and token) or is not reachable.";
// A handshake can fail for a moment on AWS: right after a deploy (permissions
// propagate) or when a function idle for weeks is reactivated (its first
// invocation fails). A browser cannot tell those from a refused token, so a
// failed handshake is tried again a few times, with backoff and jitter.
const HANDSHAKE_RETRIES = 4;
const HANDSHAKE_BACKOFF_MS = 400;
// API Gateway closes a connection after 10 minutes without a message and
// after 2 hours in any case (aws-facts.md §11): a connection the page did
// not close is opened again, with backoff and jitter, and each conversation
// resumes where it was (`getmessages` with `after`: what came since).
const RECONNECT_BACKOFF_MS = 1000;
const RECONNECT_MAX_MS = 30000;
const RECONNECT_ATTEMPTS = 10;
// API Gateway closes a connection after 10 minutes without a message; a
// {"action":"ping"} is answered {"type":"pong"} by API Gateway itself (no
// function runs), so the page sends one when it has sent nothing for this
// long. `chatctl dev` with a shorter --idle-timeout says so in config.json.
const KEEP_ALIVE_MS = 5 * 60 * 1000;

// Close frames rarely carry a reason, so explain the codes this chat produces.
const CLOSE_REASONS = {
  1000: "normal closure",
  1001: "going away or idle timeout",
  1003: "binary frames are not accepted",
  1006: "connection lost or refused",
  1008: "policy violation",
  1009: "message too big",
  1011: "server error",
};

const $ = (id) => document.getElementById(id);
const el = {
  status: $("status"),
  connectForm: $("connect-form"),
  connectFields: $("connect-fields"),
  url: $("url"),
  user: $("user"),
  token: $("token"),
  room: $("room"),
  connect: $("connect"),
  disconnect: $("disconnect"),
  joinForm: $("join-form"),
  joinRoom: $("join-room"),
  join: $("join"),
  currentRoom: $("current-room"),
  older: $("older"),
  errors: $("errors"),
  messages: $("messages"),
  composer: $("composer"),
  to: $("to"),
  message: $("message"),
  send: $("send"),
};

const state = {
  config: null, // config.json, present when the page is served by `chatctl dev`
  ws: null,
  attempt: 0, // bumped by every connect/disconnect so stale async work is dropped
  me: "", // our user name, to tell our own messages apart
  room: "",
  roomCursor: null, // `before` for the current room's previous history page
  resuming: false, // `after` pages of the current room are being fetched
  lastSent: 0, // when the page last sent a frame (ms)
};

class ClientError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

// ---- start-up ----

// Listeners go on first, so a click before config.json arrives never submits
// the form natively; connect() waits for the config instead.
bindEvents();
const configReady = loadConfig().then(prefill);

async function loadConfig() {
  try {
    const res = await fetch("config.json", { cache: "no-store" });
    return res.ok ? await res.json() : null;
  } catch {
    return null; // opened from disk or from a server that is not chatctl dev
  }
}

// config.json first, then the page's query parameters win over it. What the
// user typed before config.json arrived stays.
function prefill(config) {
  state.config = config;
  el.url.value ||= config?.url ?? "";
  el.user.value ||= config?.user ?? "";
  el.room.value ||= config?.room || "lobby";
  const query = new URLSearchParams(location.search);
  for (const name of ["url", "user", "token", "room"]) {
    if (query.has(name)) el[name].value = query.get(name);
  }
  if (query.get("autoconnect") === "1") connect();
}

function bindEvents() {
  el.connectForm.addEventListener("submit", (e) => {
    e.preventDefault();
    connect();
  });
  el.disconnect.addEventListener("click", disconnect);
  el.joinForm.addEventListener("submit", (e) => {
    e.preventDefault();
    send({ action: "join", room: el.joinRoom.value.trim() });
  });
  el.composer.addEventListener("submit", (e) => {
    e.preventDefault();
    sendMessage();
  });
  el.message.addEventListener("keydown", (e) => {
    // Enter sends, Shift+Enter starts a new line; never cut an IME composition short.
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      sendMessage();
    }
  });
  el.to.addEventListener("keydown", (e) => {
    // Enter in "To" moves on to the message instead of submitting the composer.
    if (e.key === "Enter") {
      e.preventDefault();
      el.message.focus();
    }
  });
  el.to.addEventListener("input", updatePlaceholder);
  el.to.addEventListener("change", loadDirectHistory);
  el.messages.addEventListener("click", (e) => {
    const name = e.target.closest("button[data-user]");
    if (name) chooseRecipient(name.dataset.user);
  });
  el.errors.addEventListener("click", (e) => {
    if (e.target.closest(".dismiss")) dismiss(e.target.closest(".error"));
  });
  el.older.addEventListener("click", () => {
    if (state.roomCursor) {
      send({ action: "getmessages", limit: HISTORY_LIMIT, before: state.roomCursor });
    }
  });
}

// ---- connection ----

async function connect() {
  const attempt = ++state.attempt;
  clearStickyErrors();
  setState("connecting", "Connecting…");
  try {
    await configReady;
    const { url, room, me } = await prepare();
    if (attempt === state.attempt) open(url, room, me, attempt, 0);
  } catch (e) {
    if (attempt !== state.attempt) return;
    showError(e.code || "connect_failed", e.message, true);
    setState("disconnected", "Disconnected");
  }
}

// Validates the form and resolves credentials into the URL to open. A refused
// handshake is invisible to browser JS, so catch what we can before trying.
async function prepare() {
  const token = el.token.value.trim();
  const user = el.user.value.trim();
  const room = el.room.value.trim() || "lobby";
  let url;
  try {
    url = new URL(el.url.value.trim());
  } catch {
    throw new ClientError("invalid_url", "Enter the server's WebSocket URL, e.g. ws://127.0.0.1:8080/dev.");
  }
  url.protocol = url.protocol.replace(/^http/, "ws"); // accept a pasted http(s) URL
  if (url.protocol !== "ws:" && url.protocol !== "wss:") {
    throw new ClientError("invalid_url", `The URL must start with ws:// or wss://, not ${url.protocol}//.`);
  }
  if (!ROOM_RE.test(room)) {
    throw new ClientError("invalid_room", "Room names are 1 to 64 letters, digits, '_' or '-'.");
  }
  if (!token && !user) throw new ClientError("invalid_user", "Enter a user name or a token.");

  const auth = await credentials(token, user);
  url.searchParams.set(auth.key, auth.value);
  url.searchParams.set("room", room);
  return { url: url.href, room, me: auth.me };
}

// Picks how to identify: a given token, a token minted by chatctl dev, or a plain name.
async function credentials(token, user) {
  if (token) return { key: "token", value: token, me: tokenSubject(token) || user };
  const config = state.config;
  if (config?.auth === "oidc" && sameServer(el.url.value, config.url)) {
    throw new ClientError("token_required",
      "This chat takes tokens from your app's identity provider: sign in there and paste the token in Token.");
  }
  // Tokens from chatctl dev are for its own stack only: never mint one for
  // another server (a link could name any URL).
  const local = config?.auth === "token" && config.token_endpoint && sameServer(el.url.value, config.url);
  if (!local) return { key: "user", value: user, me: user };

  setState("connecting", `Getting a token for ${user}…`);
  const endpoint = new URL(config.token_endpoint, location.href);
  endpoint.searchParams.set("user", user);
  let res;
  try {
    res = await fetch(endpoint);
  } catch {
    throw new ClientError("token_failed", `Could not reach the token endpoint ${endpoint.pathname}.`);
  }
  const body = await res.json().catch(() => ({}));
  if (!res.ok || !body.token) {
    throw new ClientError("token_failed", body.error || `The token endpoint answered ${res.status}.`);
  }
  return { key: "token", value: body.token, me: body.user || user };
}

function sameServer(a, b) {
  try {
    return new URL(a.trim()).href === new URL(b).href;
  } catch {
    return false;
  }
}

// The token's `sub` is our user name; decoding without verifying is enough to
// mark our own messages (the server verifies the token).
// The user a token names: `sub`, or with an identity provider's tokens
// (auth "oidc") the claim the stack takes the user from.
function tokenSubject(token) {
  try {
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(payload))[state.config?.user_claim || "sub"] || "";
  } catch {
    return "";
  }
}

// `retry` counts the failed handshakes of this connect so far; `resume`
// the reconnects since the connection was cut (0: a connect of the user's).
function open(url, room, me, attempt, retry, resume = 0) {
  const ws = new WebSocket(url);
  let opened = false;
  state.ws = ws;
  if (!resume) setState("connecting", `Connecting to ${new URL(url).host}…`);

  ws.onopen = () => {
    opened = true;
    keepAlive(ws);
    if (resume && room === state.room) {
      resumeRoom();
    } else {
      state.me = me;
      el.messages.replaceChildren(); // a new session may be another user: rebuild "own" marks
      enterRoom(room);
    }
    loadDirectHistory();
  };
  ws.onmessage = (e) => {
    if (state.ws === ws) handleEvent(e.data);
  };
  ws.onclose = (e) => {
    if (state.ws !== ws) return; // we closed it ourselves, or a newer socket replaced it
    state.ws = null;
    const why = `${e.code}: ${e.reason || CLOSE_REASONS[e.code] || "closed"}`;
    if (attempt !== state.attempt) return;
    if (opened || (resume && resume < RECONNECT_ATTEMPTS)) {
      // Cut by the server (idle, lifetime, kicked) or lost: back into the room we were in.
      reconnect(url, me, attempt, opened ? 1 : resume + 1, why);
      return;
    }
    if (!opened && retry < HANDSHAKE_RETRIES) {
      retryHandshake(url, room, me, attempt, retry + 1);
      return;
    }
    if (!opened) showError("connect_failed", retry > 0 ? `${REFUSED} (${retry + 1} attempts)` : REFUSED, true);
    else if (e.code !== 1000) showError("connection_closed", `The connection closed (${why}).`, true);
    setState("disconnected", `Disconnected (${why})`);
  };
}

// Exponential backoff with half of it random, so that many clients of a
// stack that just came back do not all try at the same moment.
function retryHandshake(url, room, me, attempt, retry) {
  const cap = HANDSHAKE_BACKOFF_MS * 2 ** (retry - 1);
  const delay = Math.round(cap / 2 + (Math.random() * cap) / 2);
  setState(
    "retrying",
    `The handshake failed; trying again in ${(delay / 1000).toFixed(1)} s (attempt ${retry + 1} of ${HANDSHAKE_RETRIES + 1})…`,
  );
  setTimeout(() => {
    if (attempt === state.attempt) open(url, room, me, attempt, retry);
  }, delay);
}

function reconnect(url, me, attempt, resume, why) {
  const cap = Math.min(RECONNECT_BACKOFF_MS * 2 ** (resume - 1), RECONNECT_MAX_MS);
  const delay = Math.round(cap / 2 + (Math.random() * cap) / 2);
  const next = new URL(url);
  next.searchParams.set("room", state.room);
  setState("reconnecting", `Connection closed (${why}); reconnecting in ${(delay / 1000).toFixed(1)} s…`);
  setTimeout(() => {
    if (attempt === state.attempt) open(next.href, state.room, me, attempt, HANDSHAKE_RETRIES, resume);
  }, delay);
}

// Back in the room after a cut: what came since the newest message shown.
function resumeRoom() {
  setState("connected", `Connected as ${state.me} in #${state.room} (resumed)`);
  const shown = el.messages.querySelectorAll('.message[data-kind="room"]');
  const newest = shown[shown.length - 1]?.dataset.id;
  if (!newest) {
    send({ action: "getmessages", limit: HISTORY_LIMIT });
    return;
  }
  state.resuming = true;
  send({ action: "getmessages", limit: HISTORY_LIMIT, after: newest });
}

// Pings while the connection is quiet, until it closes.
function keepAlive(ws) {
  const every = state.config?.keep_alive_ms || KEEP_ALIVE_MS;
  state.lastSent = Date.now();
  const timer = setInterval(() => {
    if (ws.readyState !== WebSocket.OPEN) {
      clearInterval(timer);
    } else if (Date.now() - state.lastSent >= every) {
      ws.send(JSON.stringify({ action: "ping" }));
      state.lastSent = Date.now();
    }
  }, Math.min(every / 4, 30_000));
}

function disconnect() {
  state.attempt++;
  const ws = state.ws;
  state.ws = null;
  ws?.close(1000);
  setState("disconnected", `Disconnected (1000: ${CLOSE_REASONS[1000]})`);
}

function send(frame) {
  if (state.ws?.readyState !== WebSocket.OPEN) {
    showError("not_connected", "Connect first.");
    return false;
  }
  state.ws.send(JSON.stringify(frame));
  state.lastSent = Date.now();
  return true;
}

// ---- server events ----

function handleEvent(data) {
  let event;
  try {
    event = JSON.parse(data);
  } catch {
    showError("bad_event", "The server sent a frame that is not JSON.");
    return;
  }
  switch (event.type) {
    case "message":
      addMessages([event]);
      break;
    case "history":
      addHistory(event);
      break;
    case "joined":
      el.joinRoom.value = "";
      enterRoom(event.room);
      break;
    case "pong":
      break; // the keep-alive's answer
    case "error":
      // $default replies carry `actions` too; their message already names them.
      showError(event.code || "error", event.message || "The server reported an error.");
      break;
    default:
      // API Gateway's own frame when a function failed: {"message": "Internal server error", …}.
      if (!event.type && typeof event.message === "string") {
        showError("server_error", `The server could not handle a request (${event.message}); try again.`);
      }
    // Other event types may come with newer servers; ignoring them is safe.
  }
}

function enterRoom(room) {
  state.room = room;
  state.roomCursor = null;
  state.resuming = false;
  el.older.hidden = true;
  el.currentRoom.textContent = room;
  document.title = `#${room} · chatctl`;
  for (const node of el.messages.querySelectorAll('.message[data-kind="room"]')) node.remove();
  setState("connected", state.me ? `Connected as ${state.me} in #${room}` : `Connected in #${room}`);
  updatePlaceholder();
  send({ action: "getmessages", limit: HISTORY_LIMIT });
}

function addHistory({ messages = [], next = null, newer = null }) {
  if (state.resuming && (messages.length === 0 || messages[0]?.room === state.room)) {
    // A page of what came since the cut: ask for the next one until none is left.
    addMessages(messages);
    if (newer) send({ action: "getmessages", limit: HISTORY_LIMIT, after: newer });
    else state.resuming = false;
    return;
  }
  // A history event does not say which conversation it answers; its messages do.
  if (messages[0]?.room === state.room) {
    state.roomCursor = next;
    el.older.hidden = !next;
  }
  addMessages(messages);
}

function addMessages(messages) {
  const box = el.messages;
  const fromBottom = box.scrollHeight - box.scrollTop;
  let appended = false;
  for (const m of messages) {
    if (m.room && m.room !== state.room) continue; // in flight from the room we left
    if (box.querySelector(`[data-id="${CSS.escape(m.id)}"]`)) continue; // history and live overlap
    appended = insertSorted(renderMessage(m)) || appended;
  }
  // Follow new messages; keep the view still when an older page lands above it.
  box.scrollTop = appended ? box.scrollHeight : box.scrollHeight - fromBottom;
}

// ULIDs sort by time, so ordering by id interleaves history and live messages
// correctly. Returns whether the node landed at the end.
function insertSorted(node) {
  let prev = el.messages.lastElementChild;
  while (prev && prev.dataset.id > node.dataset.id) prev = prev.previousElementSibling;
  el.messages.insertBefore(node, prev ? prev.nextElementSibling : el.messages.firstElementChild);
  return !node.nextElementSibling;
}

function renderMessage(m) {
  const direct = Boolean(m.to);
  const node = document.createElement("article");
  node.className = "message";
  node.classList.toggle("own", m.from === state.me);
  node.dataset.id = m.id;
  node.dataset.from = m.from;
  node.dataset.kind = direct ? "direct" : "room";

  const meta = document.createElement("header");
  meta.className = "meta";
  meta.append(nameButton(m.from, "from"));
  if (direct) meta.append(textNode("span", "arrow", "→"), nameButton(m.to, "to"), textNode("span", "badge", "direct"));
  const time = textNode("time", "time", clock(m.ts));
  time.dateTime = m.ts;
  time.title = m.ts;
  meta.append(time);

  node.append(meta, textNode("p", "text", m.text));
  return node;
}

function nameButton(name, className) {
  const button = textNode("button", className, name);
  button.type = "button";
  button.dataset.user = name;
  button.title = `Direct message to ${name}`;
  return button;
}

function textNode(tag, className, text) {
  const node = document.createElement(tag);
  node.className = className;
  node.textContent = text;
  return node;
}

// Local HH:MM:SS; the full UTC timestamp stays in the title.
function clock(ts) {
  const date = new Date(ts);
  if (Number.isNaN(date.getTime())) return String(ts);
  return [date.getHours(), date.getMinutes(), date.getSeconds()]
    .map((n) => String(n).padStart(2, "0"))
    .join(":");
}

// ---- composing ----

function sendMessage() {
  const text = el.message.value;
  if (!text.trim()) return;
  const to = el.to.value.trim();
  const frame = { action: "sendmessage", message: text };
  if (to) frame.to = to;
  // Not rendered here: the server echoes our message back to us like to everyone.
  if (send(frame)) el.message.value = "";
}

function chooseRecipient(user) {
  el.to.value = user;
  updatePlaceholder();
  loadDirectHistory();
  el.message.focus();
}

function loadDirectHistory() {
  const peer = el.to.value.trim();
  if (peer && state.ws?.readyState === WebSocket.OPEN) {
    send({ action: "getmessages", limit: HISTORY_LIMIT, with: peer });
  }
}

function updatePlaceholder() {
  const to = el.to.value.trim();
  el.composer.dataset.mode = to ? "direct" : "room";
  el.message.placeholder = to ? `Direct message to ${to}` : `Message #${state.room || "the room"}`;
}

// ---- status and errors ----

function setState(name, text) {
  el.status.dataset.state = name;
  el.status.textContent = text;
  document.body.dataset.state = name;
  const idle = name === "disconnected";
  el.connectFields.disabled = !idle;
  el.connect.hidden = !idle;
  el.disconnect.hidden = idle;
  el.send.disabled = el.join.disabled = name !== "connected";
  if (idle) el.older.hidden = true;
}

// Sticky errors explain a failed or lost connection and stay until dismissed or
// the next connect; the rest fade after a while.
function showError(code, message, sticky = false) {
  const node = document.createElement("div");
  node.className = "error";
  node.toggleAttribute("data-sticky", sticky);
  const close = textNode("button", "dismiss", "×");
  close.type = "button";
  close.setAttribute("aria-label", "Dismiss");
  node.append(textNode("span", "code", code), textNode("span", "detail", message), close);
  el.errors.append(node);
  while (el.errors.children.length > MAX_ERRORS) el.errors.firstElementChild.remove();
  if (!sticky) setTimeout(() => dismiss(node), ERROR_TTL_MS);
}

function dismiss(node) {
  if (!node?.isConnected) return;
  node.classList.add("leaving");
  setTimeout(() => node.remove(), 250);
}

function clearStickyErrors() {
  for (const node of el.errors.querySelectorAll(".error[data-sticky]")) node.remove();
}
