// triohub.js: the browser client for a triohub server, wire protocol version 1.
//
// An ES module without dependencies. The hub serves it at /triohub.js:
//
//     import { TrioHub } from "/triohub.js";
//     const hub = await TrioHub.connect("ws://127.0.0.1:8000/ws", { token: fetchToken });
//     hub.transport;                    // "websocket", or "longpoll" where WebSockets fail
//     const room = await hub.join("room:lobby", { user: "alice" });
//     room.on("message", (payload, offset) => console.log(payload.text));
//     await room.publish("message", { text: "hi" }, { ack: true });
//
// Presence (who is here, docs/presence.md): `new Presence(topic)`.
//
// It speaks the JSON codec (subprotocol `triohub.v1.json`, text messages) of
// docs/protocol.md, over a WebSocket or, where one cannot be opened, over
// HTTP long-polling (docs/protocol.md, "Long-polling"); docs/client-js.md
// documents this API.

export const SUBPROTOCOL = "triohub.v1.json";

// Frame kind tags (docs/protocol.md, "Frames").
export const JOIN = 1;
export const LEAVE = 2;
export const PUBLISH = 3;
export const CALL = 4;
export const HEARTBEAT = 5;
export const REPLY = 6;
export const PUSH = 7;
export const ERROR = 8;
export const ENDED = 9;
export const REFRESH = 10;
export const EXPIRING = 11;

const MAX_REF = 4294967295; // refs are u32; ref 0 asks for no answer

const DEFAULTS = {
  params: {}, // query-string parameters of the connect request (or a function returning them)
  token: null, // a signed token (docs/auth.md), or a function returning one (or a Promise of one), asked per connection attempt
  refreshToken: null, // a function returning a new token (or a Promise) when the hub says the current one expires; default: `token` if it is a function
  heartbeatIntervalMs: 30000, // send a Heartbeat this often...
  heartbeatTimeoutMs: 10000, // ...and call the connection dead if its Reply takes longer
  connectTimeoutMs: 10000, // give up on an opening handshake after this long
  requestTimeoutMs: 10000, // default client-side timeout of call() and publish({ack})
  joinTimeoutMs: 10000, // a connected Join left unanswered this long fails
  reconnect: true, // reconnect after the connection is lost (never after 1008)
  reconnectMinMs: 500, // first reconnect ceiling; it doubles per failed attempt...
  reconnectMaxMs: 10000, // ...up to this; each delay is random below it (full jitter)
  stableAfterMs: 5000, // a connection open this long resets the backoff
  rejoinDelayMs: 1000, // wait (plus jitter) before re-joining a crashed topic
  transports: ["websocket", "longpoll"], // tried in this order on each attempt
  websocketTimeoutMs: 5000, // a WebSocket not open by then: fall back to long-polling
  longPollUrl: null, // the long-polling path; default: the url's origin + "/poll"
  bufferSize: 100, // publishes and calls held while reconnecting (0: reject at once)...
  bufferTimeoutMs: 10000, // ...each for at most this long, then it rejects with "timeout"
  WebSocket: null, // the WebSocket class; default globalThis.WebSocket
  fetch: null, // the fetch function of long-polling; default globalThis.fetch
};

// Close codes (docs/protocol.md, "WebSocket close codes"). Browsers may only
// send 1000 or 3000-4999 themselves, hence the 4xxx codes for our own reasons.
export const CLOSE_POLICY_VIOLATION = 1008;
const CLOSE_HEARTBEAT_TIMEOUT = 4000;
const CLOSE_BAD_SERVER_FRAME = 4002;
const CLOSE_CONNECT_TIMEOUT = 4008;
// The reason of the 1008 close of a connection whose token ran out.
const TOKEN_EXPIRED = "token expired";

/** An error from the hub (an error Reply or Error frame) or from this client.
 *
 * `code` is the protocol's error code (`join_refused`, `bad_field`, ...) or one
 * of this client's own: `timeout`, `disconnected`, `closed`, `not_joined`,
 * `connect_failed`, `bad_server_frame`. `details` holds the whole error payload.
 */
export class HubError extends Error {
  constructor(code, message, { topic = null, details = null, closeCode = null } = {}) {
    super(message);
    this.name = "HubError";
    this.code = code;
    this.topic = topic;
    this.details = details;
    this.closeCode = closeCode;
  }
}

// ---------------------------------------------------------------- the codec

// JSON.stringify would quietly turn NaN, Infinity and undefined into null;
// the protocol has no such values, so refuse them instead.
function strictValue(key, value) {
  if (typeof value === "number" && !Number.isFinite(value)) {
    throw new TypeError(`${value} cannot be sent (payloads hold finite numbers only)`);
  }
  if (value === undefined) return null;
  return value;
}

/** Encode one frame array (`[tag, ...fields]`) as a JSON text message. */
export function encodeFrame(frame) {
  // Trailing optional fields may be left off when they hold their default;
  // drop trailing nulls so a frame reads like the spec's examples.
  const wire = frame.slice();
  while (wire.length > 2 && (wire[wire.length - 1] === null || wire[wire.length - 1] === undefined)) {
    wire.pop();
  }
  return JSON.stringify(wire, strictValue);
}

/** Encode several frame arrays as one batch message. */
export function encodeBatch(frames) {
  if (frames.length < 1 || frames.length > 100) throw new RangeError("a batch holds 1..100 frames");
  return "[" + frames.map(encodeFrame).join(",") + "]";
}

/** Decode one text message from the server into plain frame objects, in order.
 *
 * Throws HubError("bad_server_frame") for anything a server must not send.
 * Integers beyond 2^53 lose precision, as in any JavaScript JSON parser.
 */
export function decodeMessage(text) {
  if (typeof text !== "string") throw bad(`expected a text message, got ${typeof text}`);
  let message;
  try {
    message = JSON.parse(text);
  } catch (err) {
    throw bad(`not valid JSON: ${err.message}`);
  }
  if (!Array.isArray(message) || message.length === 0) throw bad("a message must be a non-empty array");
  // A batch is told apart from a frame by its first element: an array, not a tag.
  const frames = Array.isArray(message[0]) ? message : [message];
  return frames.map(readFrame);
}

function bad(message) {
  return new HubError("bad_server_frame", message);
}

function readFrame(wire) {
  if (!Array.isArray(wire) || wire.length === 0) throw bad("a frame must be a non-empty array");
  const [tag, ...f] = wire;
  const at = (i, fallback = null) => (i < f.length && f[i] !== undefined ? f[i] : fallback);
  const need = (n, kind) => {
    if (f.length < n) throw bad(`${kind} frame has ${f.length} fields, needs ${n}`);
  };
  switch (tag) {
    case REPLY: // [6, ref, topic, ok, payload = null]
      need(3, "Reply");
      if (typeof f[2] !== "boolean") throw bad("Reply ok must be a boolean");
      return { kind: "reply", ref: f[0], topic: f[1], ok: f[2], payload: at(3) };
    case PUSH: // [7, topic, event, payload = null, offset = null]
      need(2, "Push");
      return { kind: "push", topic: f[0], event: f[1], payload: at(2), offset: at(3) };
    case ERROR: // [8, ref, code, message]
      need(3, "Error");
      return { kind: "error", ref: f[0], code: f[1], message: f[2] };
    case ENDED: // [9, topic, reason, code]
      need(3, "Ended");
      return { kind: "ended", topic: f[0], reason: f[1], code: f[2] };
    case EXPIRING: // [11, expires_in]
      need(1, "Expiring");
      if (typeof f[0] !== "number") throw bad("Expiring expires_in must be a number");
      return { kind: "expiring", expiresIn: f[0] };
    default:
      throw bad(`unexpected frame kind ${JSON.stringify(tag)} from the server`);
  }
}

// ---------------------------------------------------------------- long-polling

const CLOSE_ABNORMAL = 1006;
const CLOSE_TOO_BIG = 1009;

/** HTTP long-polling behind the WebSocket's interface (onopen, onmessage,
 * onclose, send, close, protocol), so the hub drives either the same way.
 *
 * One POST opens a session; GETs are held by the hub until messages wait;
 * POSTs carry what we send, one at a time, as many messages per body as are
 * queued. Bodies hold one JSON message per line. Each poll says how many
 * messages it has received (`ack`), so an answer lost on the way is sent
 * again. The Close comes as the last poll's answer, in its headers. See
 * docs/protocol.md, "Long-polling".
 */
export class LongPollSocket {
  constructor(url, protocols, fetchImpl = globalThis.fetch?.bind(globalThis)) {
    this.url = url;
    this.protocol = "";
    this.onopen = this.onmessage = this.onclose = this.onerror = null;
    this._fetch = fetchImpl;
    this._session = null; // the session's URL
    this._seq = 0; // messages received so far
    this._queue = []; // messages waiting for the next POST
    this._posting = false;
    this._maxBytes = 1024 * 1024;
    this._closed = false;
    this._abort = new AbortController();
    // A page going away ends its session at once (a WebSocket's socket
    // would close), rather than leaving it to be reaped.
    this._onPageHide = () => this.close(1001, "page hidden");
    globalThis.addEventListener?.("pagehide", this._onPageHide);
    this._open(protocols);
  }

  send(text) {
    if (this._closed || this._session === null) throw new HubError("disconnected", "not connected");
    this._queue.push(text);
    if (!this._posting) this._post();
  }

  /** Close from our side: end the session on the hub too (best effort). */
  close(code = 1000, reason = "") {
    if (this._closed) return;
    this._end(code, reason, true);
  }

  async _open(protocols) {
    const [url, query] = splitQuery(this.url);
    let response, opened;
    try {
      response = await this._request(url + query, { method: "POST", body: protocols.join(", ") });
      if (response.ok) opened = await response.json();
      else await response.text();
    } catch (err) {
      this._end(CLOSE_ABNORMAL, `long-polling failed: ${err.message}`, false);
      return;
    }
    if (this._closed) return;
    if (!response.ok) {
      this._end(CLOSE_ABNORMAL, `long-polling refused (${response.status})`, false);
      return;
    }
    this._session = `${url.replace(/\/$/, "")}/${opened.session}`;
    this.protocol = opened.subprotocol;
    if (opened.max_message_size) this._maxBytes = opened.max_message_size;
    this.onopen?.({});
    this._poll();
  }

  async _poll() {
    while (!this._closed) {
      let response, body;
      try {
        response = await this._request(`${this._session}?ack=${this._seq}`, { method: "GET" });
        body = await response.text();
      } catch (err) {
        this._end(CLOSE_ABNORMAL, `poll failed: ${err.message}`, false);
        return;
      }
      if (this._closed) return;
      if (response.status !== 200) {
        // 404: the hub no longer knows the session (it restarted, or reaped it).
        this._end(CLOSE_ABNORMAL, `poll answered ${response.status}`, false);
        return;
      }
      this._seq = Number(response.headers.get("triohub-seq") ?? this._seq);
      for (const line of body.split("\n")) {
        if (line) this.onmessage?.({ data: line });
        if (this._closed) return; // a message made the hub drop us
      }
      const code = response.headers.get("triohub-close-code");
      if (code !== null) {
        const reason = decodeURIComponent(response.headers.get("triohub-close-reason") ?? "");
        this._end(Number(code), reason, false, true);
        return;
      }
    }
  }

  async _post() {
    this._posting = true;
    try {
      while (this._queue.length > 0 && !this._closed) {
        // As many queued messages as fit the hub's message size, at least one.
        let count = 0;
        let size = 0;
        while (count < this._queue.length && (count === 0 || size + this._queue[count].length < this._maxBytes)) {
          size += this._queue[count].length + 1;
          count += 1;
        }
        const body = this._queue.splice(0, count).join("\n");
        let response;
        try {
          response = await this._request(this._session, { method: "POST", body });
          await response.text();
        } catch (err) {
          this._end(CLOSE_ABNORMAL, `send failed: ${err.message}`, false);
          return;
        }
        if (this._closed) return;
        if (response.status === 413) {
          // Over the hub's size limit: it closes the session with 1009, as
          // it would a WebSocket; its poll may not get there first.
          this._end(CLOSE_TOO_BIG, "message too big", false);
          return;
        }
        if (!response.ok) {
          this._end(CLOSE_ABNORMAL, `send answered ${response.status}`, false);
          return;
        }
      }
    } finally {
      this._posting = false;
    }
  }

  _request(url, init) {
    return this._fetch(url, { ...init, cache: "no-store", credentials: "same-origin", signal: this._abort.signal });
  }

  // Stop for good; tell the hub (DELETE) unless it closed first; report the close.
  _end(code, reason, byUs, wasClean = false) {
    if (this._closed) return;
    this._closed = true;
    this._abort.abort();
    globalThis.removeEventListener?.("pagehide", this._onPageHide);
    if (this._session !== null && !wasClean) {
      // keepalive: the DELETE goes out even if the page is being unloaded.
      this._fetch(this._session, { method: "DELETE", keepalive: true, cache: "no-store" }).catch(() => {});
    }
    const event = { code, reason, wasClean: wasClean || byUs };
    // Like a WebSocket's, the close event comes in a later task.
    setTimeout(() => this.onclose?.(event), 0);
  }
}

function splitQuery(url) {
  const at = url.indexOf("?");
  return at < 0 ? [url, ""] : [url.slice(0, at), url.slice(at)];
}

// ---------------------------------------------------------------- events

class Emitter {
  constructor() {
    this._handlers = new Map();
  }

  /** Call `handler` on each `event`; returns a function that unsubscribes it. */
  on(event, handler) {
    if (!this._handlers.has(event)) this._handlers.set(event, new Set());
    this._handlers.get(event).add(handler);
    return () => this.off(event, handler);
  }

  off(event, handler) {
    this._handlers.get(event)?.delete(handler);
  }

  _emit(event, ...args) {
    for (const handler of [...(this._handlers.get(event) ?? [])]) {
      try {
        handler(...args);
      } catch (err) {
        // One broken handler must not break the connection or the others.
        setTimeout(() => {
          throw err;
        });
      }
    }
  }
}

// ---------------------------------------------------------------- topics

/** One topic of a hub: join it, listen to its Pushes, publish and call.
 *
 * `state` is "idle" (not joined yet), "joining", "joined", "rejoining"
 * (waiting to join again after a lost connection or a crash), or "left" /
 * "ended" (done for good; get a fresh one from hub.topic()).
 */
export class Topic extends Emitter {
  constructor(hub, name) {
    super();
    this.hub = hub;
    this.name = name;
    this.state = "idle";
    this.params = {};
    this.offset = null; // last Push offset seen: sent in Join when joining again
    this.epoch = null; // the history epoch that offset belongs to (from the Join Reply)
    this.recovered = null; // after a re-join from an offset: whether nothing was missed
    this.reply = undefined; // payload of the last ok Join Reply
    this._joinWaiters = [];
    this._rejoinTimer = null;
    this._wantsPresence = false; // a Presence asks for presence pushes in every Join
  }

  /** Join the topic with `params`; resolves with the Join Reply's payload.
   *
   * Rejects with a HubError carrying the server's `code` and `message` (say,
   * `join_refused`). A Join sent while disconnected waits for the connection.
   * `offset` resumes from a known position (by default, the last one seen).
   */
  join(params = {}, { offset } = {}) {
    if (this.state === "left" || this.state === "ended" || this.hub._ended) {
      const why = this.hub._ended ? "the hub is closed" : `topic ${this.name} is ${this.state}`;
      return Promise.reject(new HubError("closed", `${why}; use a new hub.topic()`, { topic: this.name }));
    }
    if (this.state !== "idle") {
      return Promise.reject(new HubError("already_joined", `topic ${this.name} is ${this.state}`));
    }
    this.params = params;
    if (offset !== undefined) this.offset = offset;
    const done = new Promise((resolve, reject) => this._joinWaiters.push({ resolve, reject }));
    this.state = "joining";
    this.hub._sendJoin(this);
    return done;
  }

  /** Publish `event`; with `{ack: true}` resolves with the Reply payload.
   *
   * Without ack the frame goes with ref 0 (no answer) and the promise resolves
   * once it is handed to the socket. Rejects with HubError: the server's error
   * code (e.g. `bad_field`, `not_joined`), `timeout`, or `disconnected`.
   */
  publish(event, payload = null, { ack = false, timeout } = {}) {
    return this._whenJoined(() => this._publishNow(event, payload, ack, timeout));
  }

  _publishNow(event, payload, ack, timeout) {
    if (!ack) {
      try {
        this.hub._send([PUBLISH, 0, this.name, event, payload]);
        return Promise.resolve();
      } catch (err) {
        return Promise.reject(err);
      }
    }
    return this.hub._request((ref) => [PUBLISH, ref, this.name, event, payload], {
      topic: this.name,
      timeoutMs: timeout ?? this.hub.options.requestTimeoutMs,
    });
  }

  /** Call the topic's service; resolves with the Reply payload.
   *
   * `timeout` (ms, default requestTimeoutMs) is enforced here and also sent to
   * the server, which answers `call_timeout` if its service is slower.
   */
  call(event, payload = null, { timeout } = {}) {
    return this._whenJoined(() => this._callNow(event, payload, timeout));
  }

  _callNow(event, payload, timeout) {
    const timeoutMs = timeout ?? this.hub.options.requestTimeoutMs;
    // The wire takes seconds; null lets the server apply its default.
    const seconds = timeoutMs == null ? null : timeoutMs / 1000;
    return this.hub._request((ref) => [CALL, ref, this.name, event, payload, seconds], {
      topic: this.name,
      timeoutMs,
    });
  }

  /** Leave the topic: no more Pushes, and no re-join on reconnect. */
  leave() {
    const wasJoined = this.state === "joined";
    this._finish("left", new HubError("closed", `left topic ${this.name}`, { topic: this.name }));
    if (!wasJoined || !this.hub.connected) return Promise.resolve();
    const options = { topic: this.name, timeoutMs: this.hub.options.requestTimeoutMs };
    return this.hub._request((ref) => [LEAVE, ref, this.name], options).then(() => undefined);
  }

  // Run `send` now if joined and connected; while the hub reconnects and the
  // topic re-joins, hold it (bounded, with a timeout) until the topic is joined again.
  _whenJoined(send) {
    if (this.state === "joined" && this.hub.connected) return send();
    if (this.hub._mayBuffer(this)) {
      return new Promise((resolve, reject) => this.hub._buffer(this, () => send().then(resolve, reject), reject));
    }
    const code = this.hub.connected ? "not_joined" : "disconnected";
    const error = new HubError(code, `topic ${this.name} is ${this.state}`, { topic: this.name });
    return Promise.reject(error);
  }

  // Membership is over for good: forget the topic and fail a pending join()
  // and whatever waits to be sent to it.
  _finish(state, error) {
    this.state = state;
    clearTimeout(this._rejoinTimer);
    if (this.hub._topics.get(this.name) === this) this.hub._topics.delete(this.name);
    for (const waiter of this._joinWaiters.splice(0)) waiter.reject(error);
    this.hub._failBuffered(this, error);
  }
}

// ---------------------------------------------------------------- notifications

/** A user's notifications, on the personal topic `user:<id>` (docs/notifications.md).
 *
 * Get one with `await hub.inbox(userId)`: it joins the topic, which only the
 * user's own connections may join (others get HubError "forbidden"), and
 * joins it again after each reconnect. `notifications` holds what the user
 * has not acknowledged (offset -> {event, data, offset}); `unread` is their
 * count, `dropped` how many the server's limits dropped since the user last
 * acknowledged.
 *
 * Events (inbox.on(name, handler)):
 * - "notification" ({event, data, offset}): once per notification, the first
 *   time this page sees it (the server sends what is not acknowledged again
 *   after a reconnect; those already seen are not emitted twice);
 * - "unread" ({unread, dropped, acked}): the count changed, here or because
 *   another device of the user acknowledged.
 */
export class Inbox extends Emitter {
  constructor(hub, user) {
    super();
    this.hub = hub;
    this.user = user;
    this.topic = hub.topic(`user:${user}`);
    this.notifications = new Map();
    this.dropped = 0;
    this.acked = 0;
    this.epoch = null;
    this.topic.on("*", (payload, offset, event) => this._pushed(event, payload, offset));
    hub.on("joined", ({ topic, payload }) => {
      if (topic === this.topic.name) this._status(payload);
    });
  }

  /** Notifications not acknowledged yet. */
  get unread() {
    return this.notifications.size;
  }

  /** The offset of the latest notification seen (0: none). */
  get latest() {
    let latest = 0;
    for (const offset of this.notifications.keys()) latest = Math.max(latest, offset);
    return Math.max(latest, this.acked);
  }

  /** Join the personal topic; resolves with this Inbox once its Reply came. */
  async open() {
    if (this.topic.state === "idle") await this.topic.join({});
    return this;
  }

  /** Acknowledge every notification up to `offset` (default: the latest seen), on all devices.
   *
   * Resolves with the inbox's status ({unread, dropped, acked, offset, epoch}).
   */
  async ack(offset = this.latest) {
    const status = await this.topic.call("ack", { offset, epoch: this.epoch });
    this._status(status);
    return status;
  }

  _pushed(event, data, offset) {
    if (event === "$unread") {
      this._status(data);
      return;
    }
    if (event.startsWith("$") || offset == null || offset <= this.acked) return;
    if (this.notifications.has(offset)) return; // sent again after a reconnect
    const notification = { event, data, offset };
    this.notifications.set(offset, notification);
    this._emit("notification", notification);
    this._emitUnread();
  }

  _status(status) {
    if (!status || typeof status !== "object") return;
    if (status.epoch !== undefined && status.epoch !== this.epoch) {
      // Another inbox (the server restarted): what we held is not its.
      if (this.epoch !== null) this.notifications.clear();
      this.epoch = status.epoch;
      this.acked = 0;
    }
    this.acked = Math.max(this.acked, status.acked ?? 0);
    for (const offset of [...this.notifications.keys()]) {
      if (offset <= this.acked) this.notifications.delete(offset);
    }
    this.dropped = status.dropped ?? 0;
    this._emitUnread();
  }

  _emitUnread() {
    this._emit("unread", { unread: this.unread, dropped: this.dropped, acked: this.acked });
  }
}

// ---------------------------------------------------------------- presence

/** Who is present in a topic, kept from the hub's presence pushes.
 *
 * Create it before joining: its topic's Joins then ask for presence pushes
 * (the `$presence` join param, added if the params lack it), and the state
 * that follows the Join Reply is seen (docs/presence.md, docs/client-js.md):
 *
 *     const topic = hub.topic("room:lobby");
 *     const presence = new Presence(topic);
 *     presence.on("join", (user, entries) => ...);  // a user arrived (first entry)
 *     presence.on("leave", (user, left) => ...);    // a user's last entry went
 *     presence.on("update", (user, entries) => ...); // entries added, gone or changed
 *     presence.on("sync", () => render(presence.list()));
 *     await topic.join({ user: "ada", $presence: { key: Presence.deviceKey(), meta: { status: "online" } } });
 *     await presence.update({ typing: true });       // merged into this connection's meta
 *
 * Entries are `{id, gen, meta}`, one per connection of the user. A diff's
 * leaves remove entries by id, its joins add or replace them by id (the
 * same rules as Phoenix's syncDiff). The state a re-join brings is compared
 * with what was known: only real arrivals and departures are told.
 * In counts mode, `counts` is `{users, connections}` and "sync" fires on each.
 */
export class Presence extends Emitter {
  constructor(topic) {
    super();
    this.topic = topic;
    this.counts = null;
    this._users = new Map(); // user -> Map(entry id -> entry)
    this._synced = false;
    // Presence pushes go to members whose Join asks for them ($presence param).
    topic._wantsPresence = true;
    topic.on("$presence_state", (payload) => this._syncState(payload));
    topic.on("$presence_diff", (payload) => this._syncDiff(payload));
    topic.on("$presence_count", (payload) => {
      this.counts = payload;
      this._emit("sync");
    });
  }

  /** A key for this tab (kept in sessionStorage): a reconnecting tab takes its own entry back. */
  static deviceKey(storageKey = "triohub.presence.key") {
    const fresh = () => Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
    try {
      let key = sessionStorage.getItem(storageKey);
      if (!key) {
        key = fresh();
        sessionStorage.setItem(storageKey, key);
      }
      return key;
    } catch {
      return fresh(); // storage may be disabled
    }
  }

  /** Whether the first state has arrived. */
  get synced() {
    return this._synced;
  }

  /** How many users are present (the hub's count in counts mode). */
  get count() {
    if (this.counts) return this.counts.users;
    return this._users.size;
  }

  /** The users present: [{user, entries: [{id, gen, meta}]}], in arrival order. */
  list() {
    return [...this._users].map(([user, entries]) => ({ user, entries: [...entries.values()] }));
  }

  /** The entries of `user` ([] if absent). */
  get(user) {
    const entries = this._users.get(user);
    return entries ? [...entries.values()] : [];
  }

  /** Merge `meta` into this connection's meta (a null value removes a key); resolves once applied. */
  update(meta) {
    return this.topic.publish("$presence", meta, { ack: true });
  }

  _syncState(payload) {
    const before = new Map([...this._users].map(([user, entries]) => [user, entries]));
    this._users = new Map();
    this._apply(payload, true);
    const quiet = !this._synced;
    this._synced = true;
    if (!quiet) {
      for (const [user, entries] of this._users) {
        if (!before.has(user)) this._emit("join", user, [...entries.values()]);
        else if (!sameEntries(before.get(user), entries)) this._emit("update", user, [...entries.values()]);
      }
      for (const [user, entries] of before) {
        if (!this._users.has(user)) this._emit("leave", user, [...entries.values()]);
      }
    }
    this._emit("sync");
  }

  _syncDiff(payload) {
    const leaves = (payload && payload.leaves) || {};
    const joins = (payload && payload.joins) || {};
    const present = new Set(this._users.keys());
    const gone = new Map();
    for (const [user, entries] of Object.entries(leaves)) {
      const held = this._users.get(user);
      if (!held) continue;
      for (const entry of entries) held.delete(entry.id);
      if (held.size === 0) {
        this._users.delete(user);
        gone.set(user, entries);
      }
    }
    this._apply(joins, true);
    for (const user of new Set([...Object.keys(joins), ...Object.keys(leaves)])) {
      const now = this._users.get(user);
      if (now && !present.has(user)) this._emit("join", user, [...now.values()]);
      else if (!now && present.has(user)) this._emit("leave", user, gone.get(user) ?? []);
      else if (now) this._emit("update", user, [...now.values()]);
    }
    this._emit("sync");
  }

  _apply(users, add) {
    for (const [user, entries] of Object.entries(users || {})) {
      let held = this._users.get(user);
      if (!held) {
        if (!add) continue;
        held = new Map();
        this._users.set(user, held);
      }
      for (const entry of entries) held.set(entry.id, entry);
    }
  }
}

function sameEntries(a, b) {
  if (a.size !== b.size) return false;
  for (const [id, entry] of a) {
    const other = b.get(id);
    if (!other || JSON.stringify(other.meta) !== JSON.stringify(entry.meta)) return false;
  }
  return true;
}

// ---------------------------------------------------------------- the hub

/** One connection to a hub, kept alive and re-established as needed.
 *
 * Events (hub.on(name, handler)):
 * - "state" (state): "connecting", "open", "reconnecting" or "closed"
 * - "open" ({reconnected, transport}): transport is "websocket" or "longpoll"
 * - "close" ({code, reason, wasClean, reconnectInMs}): reconnectInMs is null
 *   when the hub will not reconnect (after 1008 or hub.close())
 * - "joined" ({topic, payload, rejoined, recovered}): every ok Join Reply;
 *   recovered is true or false after a re-join from an offset, else null
 * - "unrecovered" ({topic, payload}): a re-join could not get back everything
 *   missed (the history was dropped or too short): refetch the topic's state
 * - "ended" ({topic, code, reason, rejoinInMs}): the server ended a membership
 * - "error" (HubError): Error frames not tied to a request, failed re-joins,
 *   failed token refreshes
 * - "expiring" ({expiresInMs}): the connection's token runs out soon; the hub
 *   refreshes it by itself with `refreshToken` (or a `token` function)
 * - "refreshed" ({expiresInMs}): the hub took a new token
 */
export class TrioHub extends Emitter {
  /** Connect to `url` (like "ws://host:port/ws"); resolves once open.
   *
   * Rejects with HubError("connect_failed") if the first attempt fails; after
   * the first success the hub reconnects on its own.
   */
  static connect(url, options = {}) {
    const hub = new TrioHub(url, options);
    return hub.open().then(() => hub);
  }

  constructor(url, options = {}) {
    super();
    this.url = url;
    this.options = { ...DEFAULTS, ...options };
    this.state = "closed";
    this._ws = null;
    this._everOpened = false;
    this._closedByApp = false;
    this._ended = false; // closed for good (close(), 1008, a failed first attempt)
    this._attempt = 0; // failed connection attempts since the last stable one
    this._nextRef = 1;
    this._pending = new Map(); // ref -> {settle(error, payload), timer, topic, isJoin}
    this._topics = new Map(); // name -> Topic, for every topic we want to be in
    this._inboxes = new Map(); // personal topic name -> Inbox (hub.inbox)
    this._inbox = []; // decoded frames not handled yet (see _drain)
    this._deferred = false;
    this._timers = { heartbeat: null, reconnect: null, stable: null, connect: null };
    this._closedNotified = false;
    this._opened = null;
    this._buffered = []; // publishes and calls waiting for their topic to be joined again
    this._websocketWorked = false; // a WebSocket opened once: the network lets them through
    this._longPollWorked = false;
    /** The transport in use (or last used): "websocket", "longpoll", or null before any. */
    this.transport = null;
  }

  /** True when the connection is open. */
  get connected() {
    return this.state === "open";
  }

  /** Open the connection; resolves once it is open. */
  open() {
    if (this._opened) return this._opened.promise;
    this._closedByApp = false;
    this._everOpened = false;
    this._ended = false;
    this._attempt = 0;
    let resolve, reject;
    const promise = new Promise((res, rej) => ((resolve = res), (reject = rej)));
    this._opened = { promise, resolve, reject };
    this._connect();
    return promise;
  }

  /** Close for good: leave nothing pending, and do not reconnect. */
  close(code = 1000, reason = "") {
    this._closedByApp = true;
    this._clearTimers();
    const ws = this._ws;
    if (ws) {
      this._detach(ws);
      try {
        ws.close(code, reason);
      } catch {
        // already closing
      }
    }
    this._lost({ code, reason, wasClean: true });
  }

  /** Hand the hub a new token for this connection's user; resolves with {expiresInMs}.
   *
   * Rejects with HubError("invalid_token") for a token the hub refuses and
   * HubError("forbidden") for another user's (changing user takes a new
   * connection). Called by itself on "expiring" when a refresh function is set.
   */
  async refresh(token) {
    const payload = await this._request((ref) => [REFRESH, ref, token], {
      timeoutMs: this.options.requestTimeoutMs,
    });
    const refreshed = { expiresInMs: payload.expires_in * 1000 };
    this._emit("refreshed", refreshed);
    return refreshed;
  }

  /** The Topic named `name`, created (not joined) if the hub has none. */
  topic(name) {
    let topic = this._topics.get(name);
    if (!topic) {
      topic = new Topic(this, name);
      this._topics.set(name, topic);
    }
    return topic;
  }

  /** Join `name` with `params`; resolves with the Topic once joined.
   *
   * The Join Reply's payload is `topic.reply`. Handlers added with topic.on()
   * right after the await still see the Pushes that follow the Reply (such as
   * a room's history): see "Handlers and history" in docs/client-js.md.
   */
  async join(name, params = {}, options = {}) {
    const topic = this.topic(name);
    await topic.join(params, options);
    return topic;
  }

  /** The notifications of user `user` (its personal topic); resolves once joined.
   *
   * See Inbox, and "Notifications" in docs/client-js.md.
   */
  async inbox(user) {
    const name = `user:${user}`;
    let inbox = this._inboxes.get(name);
    if (!inbox || this._topics.get(name) !== inbox.topic) {
      inbox = new Inbox(this, user);
      this._inboxes.set(name, inbox);
    }
    return inbox.open();
  }

  // -------------------------------------------------------------- sending

  _send(frame) {
    if (!this.connected) throw new HubError("disconnected", "not connected");
    this._ws.send(encodeFrame(frame));
  }

  _allocateRef() {
    for (;;) {
      const ref = this._nextRef;
      this._nextRef = ref < MAX_REF ? ref + 1 : 1;
      if (!this._pending.has(ref)) return ref;
    }
  }

  // Send a request that gets an answer; resolve with its ok Reply payload.
  _request(build, { topic = null, timeoutMs = null } = {}) {
    return new Promise((resolve, reject) => {
      const settle = (error, payload) => (error ? reject(error) : resolve(payload));
      this._track(build, { topic, timeoutMs, settle });
    });
  }

  // Send `build(ref)` and remember `settle(error, payload)` for its answer,
  // which _handle calls synchronously, in the order frames arrive.
  _track(build, { topic, timeoutMs, settle, isJoin = false }) {
    if (!this.connected) {
      settle(new HubError("disconnected", "not connected", { topic }));
      return;
    }
    const ref = this._allocateRef();
    try {
      this._ws.send(encodeFrame(build(ref)));
    } catch (err) {
      settle(err);
      return;
    }
    const entry = { settle, topic, isJoin, timer: null };
    if (timeoutMs != null) {
      // Give up on our own; a late answer to a forgotten ref is dropped.
      entry.timer = setTimeout(() => {
        this._pending.delete(ref);
        settle(new HubError("timeout", `no answer in ${timeoutMs} ms`, { topic }));
      }, timeoutMs);
    }
    this._pending.set(ref, entry);
  }

  _sendJoin(topic) {
    clearTimeout(topic._rejoinTimer);
    if (!this.connected) return; // sent by _onOpen once connected
    topic.state = "joining";
    let params = topic.params;
    if (topic._wantsPresence && !(params && "$presence" in params)) params = { ...params, $presence: {} };
    // From the last offset seen, in its epoch: the hub sends what was missed.
    const recovering = topic.offset != null;
    const epoch = recovering ? topic.epoch : null;
    this._track((ref) => [JOIN, ref, topic.name, params, topic.offset, epoch], {
      topic: topic.name,
      timeoutMs: this.options.joinTimeoutMs,
      isJoin: true,
      settle: (error, payload) => this._joinAnswered(topic, error, payload, recovering),
    });
  }

  _joinAnswered(topic, error, payload, recovering) {
    if (this._topics.get(topic.name) !== topic) {
      // The app left while the Join was on its way: leave on the server too.
      if (!error && this.connected) this._send([LEAVE, 0, topic.name]);
      return;
    }
    if (!error) {
      const rejoined = topic.reply !== undefined;
      topic.state = "joined";
      topic.reply = payload;
      const position = payload !== null && typeof payload === "object" && !Array.isArray(payload) ? payload : {};
      const recovered = recovering && typeof position.recovered === "boolean" ? position.recovered : null;
      topic.recovered = recovered;
      if (typeof position.epoch === "string") topic.epoch = position.epoch;
      // Recovered: the missed Pushes follow, each moving the offset on. Else
      // carry on from the topic's position now (what was missed is lost).
      if (recovered !== true && Number.isInteger(position.offset)) topic.offset = position.offset;
      for (const waiter of topic._joinWaiters.splice(0)) waiter.resolve(payload);
      this._emit("joined", { topic: topic.name, payload, rejoined, recovered });
      if (recovered === false) this._emit("unrecovered", { topic: topic.name, payload });
      this._sendBuffered(topic);
      return;
    }
    if (error.code === "disconnected") return; // joined again on reconnect
    const waiting = topic._joinWaiters.length > 0;
    if (error.code === "timeout" && !waiting) {
      this._scheduleRejoin(topic); // a re-join went unanswered: try again later
      return;
    }
    topic._finish("ended", error);
    if (!waiting) {
      // A re-join failed, and no join() call is there to hear of it.
      this._emit("ended", { topic: topic.name, code: error.code, reason: error.message, rejoinInMs: null });
      this._emit("error", error);
    }
  }

  _scheduleRejoin(topic) {
    topic.state = "rejoining";
    clearTimeout(topic._rejoinTimer);
    const delay = jitter(this.options.rejoinDelayMs);
    topic._rejoinTimer = setTimeout(() => {
      if (this._topics.get(topic.name) === topic && topic.state === "rejoining") this._sendJoin(topic);
    }, delay);
    return delay;
  }

  // -------------------------------------------------------------- the buffer

  _mayBuffer(topic) {
    if (this.options.bufferSize <= 0 || this._ended || topic.reply === undefined) return false;
    if (topic.state === "rejoining" || topic.state === "joining") return true;
    return topic.state === "joined" && !this.connected;
  }

  // Hold `send` until `topic` is joined again; `fail(error)` if it is not in time.
  _buffer(topic, send, fail) {
    const { bufferSize, bufferTimeoutMs } = this.options;
    if (this._buffered.length >= bufferSize) {
      fail(new HubError("buffer_full", `${bufferSize} requests already wait for the connection`, { topic: topic.name }));
      return;
    }
    const entry = { topic, send, fail, timer: null };
    entry.timer = setTimeout(() => {
      this._buffered = this._buffered.filter((other) => other !== entry);
      fail(new HubError("timeout", `not sent: still disconnected after ${bufferTimeoutMs} ms`, { topic: topic.name }));
    }, bufferTimeoutMs);
    this._buffered.push(entry);
  }

  _sendBuffered(topic) {
    const mine = this._buffered.filter((entry) => entry.topic === topic);
    if (mine.length === 0) return;
    this._buffered = this._buffered.filter((entry) => entry.topic !== topic);
    for (const entry of mine) {
      clearTimeout(entry.timer);
      entry.send();
    }
  }

  _failBuffered(topic, error) {
    const mine = this._buffered.filter((entry) => entry.topic === topic);
    if (mine.length === 0) return;
    this._buffered = this._buffered.filter((entry) => entry.topic !== topic);
    for (const entry of mine) {
      clearTimeout(entry.timer);
      entry.fail(error);
    }
  }

  // -------------------------------------------------------------- the socket

  _connect() {
    this._clearTimers();
    const { token } = this.options;
    if (typeof token !== "function") {
      this._openTransports(token);
      return;
    }
    // A fresh token per attempt, perhaps fetched from the application's server.
    this._setState("connecting");
    const attempt = (this._tokenAttempt = (this._tokenAttempt ?? 0) + 1);
    const current = () => attempt === this._tokenAttempt && !this._closedByApp && !this._ws;
    Promise.resolve()
      .then(() => token())
      .then(
        (value) => current() && this._openTransports(value),
        (err) => current() && this._lost({ code: 1006, reason: `no token: ${err.message ?? err}`, wasClean: false }),
      );
  }

  // Try the transports in order (see _tryTransport) for one attempt.
  _openTransports(token) {
    let order = this.options.transports;
    // Where WebSockets never opened and long-polling did, reconnects go
    // straight to long-polling instead of waiting for a WebSocket again.
    if (!this._websocketWorked && this._longPollWorked && order.includes("longpoll")) {
      order = ["longpoll"];
    }
    this._tryTransport(order, 0, token);
  }

  // Open the `index`th transport of `order`; if it cannot be made, fails
  // before it opens or does not open within websocketTimeoutMs, try the next.
  // Once WebSockets have worked, one failing fast means the hub is down or
  // restarting, not that the network blocks them: that attempt just fails.
  _tryTransport(order, index, token) {
    const name = order[index];
    const fallback = index + 1 < order.length;
    const next = () => {
      this._detach(ws);
      try {
        ws.close();
      } catch {
        // not open yet, or closing
      }
      this._tryTransport(order, index + 1, token);
    };
    let ws;
    try {
      ws = this._openTransport(name, token);
    } catch (err) {
      if (fallback) {
        this._tryTransport(order, index + 1, token);
        return;
      }
      // No WebSocket class, a malformed URL: no use retrying.
      this._closedByApp = true;
      this._lost({ code: 1006, reason: err.message, wasClean: false });
      return;
    }
    this._ws = ws;
    this._setState("connecting");
    ws.onopen = () => {
      if (ws !== this._ws) return;
      this.transport = name;
      if (name === "websocket") this._websocketWorked = true;
      else this._longPollWorked = true;
      this._onOpen(ws);
    };
    ws.onmessage = (event) => this._onMessage(ws, event.data);
    ws.onclose = (event) => {
      const fellBack = fallback && this.state === "connecting" && !this._websocketWorked;
      if (ws === this._ws && fellBack) next();
      else this._onClose(ws, event);
    };
    ws.onerror = () => {}; // a close event always follows, with the details
    clearTimeout(this._timers.connect);
    if (fallback) {
      this._timers.connect = setTimeout(() => ws === this._ws && next(), this.options.websocketTimeoutMs);
    } else {
      this._timers.connect = setTimeout(() => {
        this._abandon(ws, CLOSE_CONNECT_TIMEOUT, "connect timeout");
      }, this.options.connectTimeoutMs);
    }
  }

  _openTransport(name, token) {
    if (name === "websocket") {
      const WebSocketImpl = this.options.WebSocket ?? globalThis.WebSocket;
      if (typeof WebSocketImpl !== "function") throw new TypeError("this page has no WebSocket");
      return new WebSocketImpl(this._connectUrl(this.url, token), [SUBPROTOCOL]);
    }
    if (name === "longpoll") {
      const fetchImpl = this.options.fetch ?? globalThis.fetch?.bind(globalThis);
      if (typeof fetchImpl !== "function") throw new TypeError("this page has no fetch");
      return new LongPollSocket(this._connectUrl(this._longPollUrl(), token), [SUBPROTOCOL], fetchImpl);
    }
    throw new TypeError(`unknown transport ${JSON.stringify(name)}`);
  }

  _longPollUrl() {
    if (this.options.longPollUrl) return this.options.longPollUrl;
    const url = new URL(this.url, globalThis.location?.href);
    url.protocol = url.protocol === "wss:" || url.protocol === "https:" ? "https:" : "http:";
    url.pathname = "/poll";
    url.search = "";
    return url.href;
  }

  _connectUrl(base, token) {
    let params = this.options.params;
    if (typeof params === "function") params = params(); // fresh per attempt
    params = { ...(params ?? {}) };
    // Browsers cannot set headers on a WebSocket: the token goes in the query.
    if (token != null) params.token = token;
    const query = new URLSearchParams(params).toString();
    if (!query) return base;
    return base + (base.includes("?") ? "&" : "?") + query;
  }

  _onOpen(ws) {
    if (ws !== this._ws) return;
    clearTimeout(this._timers.connect);
    if (ws.protocol !== SUBPROTOCOL) {
      // The server must pick our subprotocol; anything else speaks another language.
      this._abandon(ws, CLOSE_BAD_SERVER_FRAME, `server chose subprotocol ${JSON.stringify(ws.protocol)}`);
      return;
    }
    const reconnected = this._everOpened;
    this._everOpened = true;
    this._setState("open");
    // Only a connection that stays up a while resets the backoff: a server
    // that accepts and at once closes again must not be hammered.
    this._timers.stable = setTimeout(() => (this._attempt = 0), this.options.stableAfterMs);
    this._scheduleHeartbeat();
    if (this._opened && !this._opened.settled) {
      this._opened.settled = true;
      this._opened.resolve();
    }
    this._emit("open", { reconnected, transport: this.transport });
    // Join every topic we want to be in again, from the last offset seen, so
    // the service can send what we missed.
    for (const topic of this._topics.values()) {
      if (topic.state !== "idle") this._sendJoin(topic);
    }
  }

  _onMessage(ws, data) {
    if (ws !== this._ws) return;
    let frames;
    try {
      frames = decodeMessage(data);
    } catch (err) {
      this._emit("error", err);
      this._abandon(ws, CLOSE_BAD_SERVER_FRAME, "bad frame from server");
      return;
    }
    this._inbox.push(...frames);
    if (!this._deferred) this._drain();
  }

  // Handle inbound frames in order. After a Reply that resolves a join(),
  // pause until the next macrotask: the app's `await hub.join(...)` resumes
  // in a microtask and adds its topic.on() handlers before the Pushes that
  // follow the Reply (a room's history) are delivered, whether they share
  // the Reply's batch or come in the next messages. Messages arriving during
  // the pause queue up behind, so order is kept.
  _drain({ pause = true } = {}) {
    this._deferred = false;
    while (this._inbox.length > 0) {
      const frame = this._inbox.shift();
      const resolvedJoin = this._handle(frame);
      if (resolvedJoin && pause) {
        this._deferred = true;
        setTimeout(() => this._deferred && this._drain(), 0);
        return;
      }
    }
  }

  // Returns true when the frame answered a Join.
  _handle(frame) {
    switch (frame.kind) {
      case "reply": {
        const entry = this._pending.get(frame.ref);
        if (!entry) return false; // an answer we gave up waiting for
        this._pending.delete(frame.ref);
        clearTimeout(entry.timer);
        if (frame.ok) {
          entry.settle(null, frame.payload);
        } else {
          const p = frame.payload ?? {};
          entry.settle(new HubError(p.code ?? "error", p.message ?? "", { topic: frame.topic, details: p }));
        }
        return entry.isJoin && frame.ok;
      }
      case "error": {
        // A protocol-level error: it fails the request with its ref, if any.
        const entry = frame.ref == null ? null : this._pending.get(frame.ref);
        const error = new HubError(frame.code, frame.message, { topic: entry?.topic ?? null });
        if (entry) {
          this._pending.delete(frame.ref);
          clearTimeout(entry.timer);
          entry.settle(error);
        } else {
          this._emit("error", error);
        }
        return false;
      }
      case "push": {
        const topic = this._topics.get(frame.topic);
        // Pushes only come after the ok Join Reply; drop any for topics we left.
        if (!topic || topic.state !== "joined") return false;
        if (frame.offset != null) topic.offset = frame.offset;
        topic._emit(frame.event, frame.payload, frame.offset, frame.event);
        topic._emit("*", frame.payload, frame.offset, frame.event);
        return false;
      }
      case "ended": {
        const topic = this._topics.get(frame.topic);
        if (!topic || (topic.state !== "joined" && topic.state !== "joining")) return false;
        let rejoinInMs = null;
        if (frame.code === "topic_crashed") {
          // The topic's actor restarts: join again shortly, from our offset.
          rejoinInMs = this._scheduleRejoin(topic);
        } else {
          topic._finish("ended", new HubError(frame.code, frame.reason, { topic: frame.topic }));
        }
        this._emit("ended", { topic: frame.topic, code: frame.code, reason: frame.reason, rejoinInMs });
        return false;
      }
      case "expiring": {
        this._emit("expiring", { expiresInMs: frame.expiresIn * 1000 });
        const { refreshToken, token } = this.options;
        const fresh = refreshToken ?? (typeof token === "function" ? token : null);
        if (fresh) this._refreshWith(fresh);
        return false;
      }
      default:
        return false;
    }
  }

  async _refreshWith(fresh) {
    const ws = this._ws;
    try {
      const token = await fresh();
      if (this._ws === ws && this.connected) await this.refresh(token);
    } catch (err) {
      this._emit("error", err instanceof HubError ? err : new HubError("refresh_failed", String(err.message ?? err)));
    }
  }

  _scheduleHeartbeat() {
    clearTimeout(this._timers.heartbeat);
    this._timers.heartbeat = setTimeout(() => this._heartbeat(), this.options.heartbeatIntervalMs);
  }

  _heartbeat() {
    const ws = this._ws;
    if (!this.connected) return;
    // No Reply in time: the connection (or the server) is dead even if the
    // socket has not noticed; drop it and reconnect.
    this._request((ref) => [HEARTBEAT, ref], { timeoutMs: this.options.heartbeatTimeoutMs }).then(
      () => this._ws === ws && this._scheduleHeartbeat(),
      (err) => {
        if (this._ws === ws && err.code === "timeout") {
          this._abandon(ws, CLOSE_HEARTBEAT_TIMEOUT, "heartbeat timeout");
        }
      },
    );
  }

  // Stop using `ws` now, without waiting for a closing handshake that may never come.
  _abandon(ws, code, reason) {
    if (ws !== this._ws) return;
    this._detach(ws);
    try {
      ws.close(code, reason);
    } catch {
      // already closing
    }
    this._lost({ code, reason, wasClean: false });
  }

  _detach(ws) {
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    if (this._ws === ws) this._ws = null;
  }

  _onClose(ws, event) {
    if (ws !== this._ws) return;
    this._detach(ws);
    this._drain({ pause: false }); // what came before the close still counts
    this._lost({ code: event.code, reason: event.reason, wasClean: event.wasClean });
  }

  // The connection is gone: fail what waits on it, and decide whether to reconnect.
  _lost({ code, reason, wasClean }) {
    if (this.state === "closed" && !this._ws && this._closedNotified) return;
    this._clearTimers();
    this._inbox = [];
    this._deferred = false;
    for (const entry of this._pending.values()) clearTimeout(entry.timer);
    const pending = [...this._pending.values()];
    this._pending.clear();
    for (const entry of pending) {
      const details = { topic: entry.topic, closeCode: code };
      entry.settle(new HubError("disconnected", `connection closed (${code})`, details));
    }
    for (const topic of this._topics.values()) {
      if (topic.state === "joined" || topic.state === "joining") topic.state = "rejoining";
    }

    // Never reconnect unchanged after 1008 (policy violation): the app must
    // fix what it sends or authenticate again, which a `token` function does
    // for an expired token. A first attempt that fails is the caller's to
    // retry (connect() rejects).
    const firstFailed = !this._everOpened;
    const renewable = reason === TOKEN_EXPIRED && typeof this.options.token === "function";
    const willReconnect =
      this.options.reconnect &&
      !this._closedByApp &&
      !firstFailed &&
      (code !== CLOSE_POLICY_VIOLATION || renewable);
    let reconnectInMs = null;
    if (willReconnect) {
      reconnectInMs = this._backoff();
      this._setState("reconnecting");
      this._timers.reconnect = setTimeout(() => this._connect(), reconnectInMs);
    } else {
      this._ended = true;
      this._setState("closed");
      this._closedNotified = true;
      const error = new HubError(
        firstFailed ? "connect_failed" : "closed",
        `connection closed (${code}${reason ? ": " + reason : ""})`,
        { closeCode: code },
      );
      for (const topic of [...this._topics.values()]) topic._finish("ended", error);
      if (this._opened && !this._opened.settled) this._opened.reject(error);
      this._opened = null;
    }
    this._emit("close", { code, reason, wasClean, reconnectInMs });
  }

  // Exponential backoff with full jitter: min * 2^attempt, capped, then a
  // random delay below it. Clients dropped together (a server restart)
  // spread over the whole window instead of arriving in waves.
  _backoff() {
    const { reconnectMinMs, reconnectMaxMs } = this.options;
    const ceiling = Math.min(reconnectMaxMs, reconnectMinMs * 2 ** this._attempt);
    this._attempt += 1;
    return Math.round(Math.random() * ceiling);
  }

  _setState(state) {
    if (state === "open" || state === "connecting") this._closedNotified = false;
    if (this.state === state) return;
    this.state = state;
    this._emit("state", state);
  }

  _clearTimers() {
    for (const key of Object.keys(this._timers)) {
      clearTimeout(this._timers[key]);
      this._timers[key] = null;
    }
  }
}

// A delay between 50% and 100% of `ms`: many members of a crashed topic
// spread their re-joins instead of arriving together.
function jitter(ms) {
  return Math.round(ms * (0.5 + Math.random() * 0.5));
}

/** Shorthand for TrioHub.connect(url, options). */
export function connect(url, options = {}) {
  return TrioHub.connect(url, options);
}

export default TrioHub;
