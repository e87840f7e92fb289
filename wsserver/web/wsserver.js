// wsserver.js: the client library of wsserver, one ES module with no
// dependency and no build step (served by the server at /wsserver.js, and
// on npm as "wsserver-client").
//
//   import { connect } from "/wsserver.js";
//   const client = connect({ url: "ws://host:8085/chat", id: "alice" });
//   client.on("message", (m) => console.log(m.sender, m.text));
//   const id = await client.send(["bob"], "hi");
//
// It reconnects with exponential backoff and jitter, resumes with ?since=
// after the newest inbox seq it saw (so no message is shown twice or
// missed), and resends every message not yet acked with the same ack token
// (the server routes it once and acks it again with the first id).

/** The version of the server this library was shipped with. */
export const VERSION = "0.1.0";

/** Close codes after which trying again cannot help: stop and report. */
const STOP_CODES = new Set([
  4000, // a bad id or since in the query
  4001, // a message the server refused (it would be resent as it is)
  4008, // too many connections for this user
  4050, // unauthorized
  1009, // a message over the server's maxSize (likewise)
]);

/** The server closed because the token's exp passed. */
const TOKEN_EXPIRED = 4051;

const DEFAULTS = {
  minDelay: 500, // ms before the first reconnect (halved at most by jitter)
  maxDelay: 30000, // the cap of the backoff
  stableAfter: 5000, // ms online after which the backoff starts over
  openTimeout: 10000, // ms a connection may take to open
  maxOutbox: 1000, // messages waiting for their ack, at most
};

/**
 * Connect to a wsserver; see Client for the options.
 * @param {object} options
 * @returns {Client}
 */
export function connect(options) {
  return new Client(options);
}

/** Why a send() was rejected: the client stopped, or the outbox is full. */
export class SendError extends Error {
  constructor(message, code = null, reason = null) {
    super(message);
    this.name = "SendError";
    this.code = code;
    this.reason = reason;
  }
}

/**
 * One logical connection to the server: it reconnects by itself until
 * close() or a refusal that a retry cannot mend (4000, 4001, 4008, 4050,
 * 1009, or 4051 with no new token).
 */
export class Client {
  constructor(options = {}) {
    if (!options.url) {
      throw new TypeError("wsserver: connect() needs a url");
    }
    this.url = String(options.url);
    this.id = options.id === undefined || options.id === null ? null : String(options.id);
    this.token = options.token || null;
    this._onTokenExpired = options.onTokenExpired || null;
    this._WebSocket = options.WebSocket || globalThis.WebSocket;
    this._setTimeout = options.setTimeout || ((f, ms) => globalThis.setTimeout(f, ms));
    this._clearTimeout = options.clearTimeout || ((t) => globalThis.clearTimeout(t));
    this._random = options.random || Math.random;
    this._now = options.now || Date.now;
    for (const name of Object.keys(DEFAULTS)) {
      this["_" + name] = typeof options[name] === "number" ? options[name] : DEFAULTS[name];
    }
    const storage = options.storage || "memory";
    if (storage !== "memory" && storage !== "local") {
      throw new TypeError('wsserver: storage is "memory" or "local", not ' + JSON.stringify(storage));
    }
    this._store = storage === "local" ? options.localStorage || globalThis.localStorage : null;
    this._storeKey = "wsserver.since " + (this.id === null ? "" : this.id) + " " + this.url;
    /** The newest inbox seq seen: the next connection resumes after it. */
    this.lastSeq = validSeq(options.since) ? options.since : this._load();
    /** connecting, online, offline or stopped. */
    this.state = "connecting";
    this._listeners = new Map();
    this._pending = new Map(); // ack token -> {frame, resolve, reject}, in send order
    this._prefix = randomPrefix();
    this._count = 0;
    this._ws = null;
    this._timer = null;
    this._attempt = 0;
    this._stopped = false;
    // on the next tick, so that the app can add its listeners first
    queueMicrotask(() => this._open());
  }

  /**
   * Call listener(value) on each event: message, status, delivered,
   * presence, gap. The function returned removes it.
   */
  on(event, listener) {
    let set = this._listeners.get(event);
    if (!set) {
      set = new Set();
      this._listeners.set(event, set);
    }
    set.add(listener);
    return () => this.off(event, listener);
  }

  /** Remove a listener added with on(). */
  off(event, listener) {
    const set = this._listeners.get(event);
    if (set) {
      set.delete(listener);
    }
  }

  /** How many sent messages wait for their ack (offline: in the outbox). */
  get pending() {
    return this._pending.size;
  }

  /**
   * Send a text message; resolves with the message id once the server acked
   * it (routed and committed), after as many reconnects as it takes.
   */
  send(recipients, text, data = null) {
    if (this._stopped) {
      return Promise.reject(new SendError("wsserver: the client is stopped"));
    }
    if (!Array.isArray(recipients) || recipients.length === 0) {
      return Promise.reject(new TypeError("wsserver: send() needs a non-empty array of recipients"));
    }
    if (this._pending.size >= this._maxOutbox) {
      return Promise.reject(new SendError("wsserver: " + this._maxOutbox + " messages already wait for their ack"));
    }
    const ack = this._prefix + (++this._count).toString(36);
    const frame = JSON.stringify({
      type: "text",
      text: String(text),
      recipients: recipients,
      data: data === undefined ? null : data,
      ack: ack,
    });
    return new Promise((resolve, reject) => {
      this._pending.set(ack, { frame, resolve, reject });
      if (this.state === "online") {
        this._ws.send(frame);
      }
    });
  }

  /** Close with 1000 and do not reconnect; unacked sends are rejected. */
  close() {
    if (this._stopped) {
      return;
    }
    const ws = this._ws;
    this._stop(1000, "closed by the client");
    if (ws) {
      try {
        ws.close(1000);
      } catch (e) {
        // already closing
      }
    }
  }

  // -- inside --------------------------------------------------------------

  _emit(event, value) {
    const set = this._listeners.get(event);
    if (!set) {
      return;
    }
    for (const listener of Array.from(set)) {
      try {
        listener(value);
      } catch (e) {
        // a listener's bug must not break the connection's bookkeeping:
        // reported as an uncaught error is, and the others still called
        if (typeof globalThis.reportError === "function") {
          globalThis.reportError(e);
        } else {
          queueMicrotask(() => {
            throw e;
          });
        }
      }
    }
  }

  _status(state, code, reason, extra) {
    this.state = state;
    this._emit("status", Object.assign({ state, code, reason }, extra));
  }

  _address() {
    const base = globalThis.location ? globalThis.location.href : undefined;
    const url = new URL(this.url, base);
    if (url.protocol === "http:") {
      url.protocol = "ws:";
    } else if (url.protocol === "https:") {
      url.protocol = "wss:";
    }
    const query = url.searchParams;
    if (this.id !== null) {
      query.set("id", this.id);
    }
    if (this.lastSeq !== null) {
      query.set("since", String(this.lastSeq));
    }
    if (this.token) {
      query.set("token", this.token);
    }
    return url.toString();
  }

  _open(fresh = false) {
    if (this._stopped) {
      return;
    }
    // a jwt that expired while offline (a laptop asleep) would get 4050 and
    // stop: ask for a new one first (once: the server judges the new one)
    if (!fresh && this.token && this._onTokenExpired && jwtExpired(this.token, this._now())) {
      this._refresh(TOKEN_EXPIRED, "Token expired (before connecting)");
      return;
    }
    this._status("connecting", null, null, { attempt: this._attempt });
    let ws;
    try {
      ws = new this._WebSocket(this._address());
    } catch (e) {
      // a malformed url: no retry mends it
      this._stop(null, String((e && e.message) || e));
      return;
    }
    this._ws = ws;
    let openedAt = null;
    const timer = this._setTimeout(() => {
      if (this._ws === ws && openedAt === null) {
        try {
          ws.close();
        } catch (e) {
          // closing anyway
        }
        this._closed(1006, "no answer within " + this._openTimeout + " ms", null);
      }
    }, this._openTimeout);
    ws.onopen = () => {
      if (this._ws !== ws) {
        return;
      }
      this._clearTimeout(timer);
      openedAt = this._now();
      this._status("online", null, null, { since: this.lastSeq });
      // the outbox, and what the last connection sent without an ack: the
      // same tokens, so the server routes each once
      for (const entry of this._pending.values()) {
        if (this._ws !== ws) {
          return; // a listener closed it
        }
        ws.send(entry.frame);
      }
    };
    ws.onmessage = (event) => {
      if (this._ws === ws) {
        this._received(event.data);
      }
    };
    ws.onerror = () => {}; // onclose follows, with the code
    ws.onclose = (event) => {
      if (this._ws === ws) {
        this._clearTimeout(timer);
        this._closed(event.code, event.reason || "", openedAt);
      }
    };
  }

  _closed(code, reason, openedAt) {
    this._ws = null;
    if (this._stopped) {
      return;
    }
    if (STOP_CODES.has(code)) {
      this._stop(code, reason);
      return;
    }
    if (code === TOKEN_EXPIRED) {
      this._refresh(code, reason);
      return;
    }
    if (openedAt !== null && this._now() - openedAt >= this._stableAfter) {
      this._attempt = 0;
    }
    const delay = this._delay(this._attempt);
    this._attempt += 1;
    // refused: it never opened (a refused handshake, HTTP 403 or 401, or
    // the server is down: a browser does not tell which)
    this._status("offline", code, reason, { delay, refused: openedAt === null });
    this._timer = this._setTimeout(() => {
      this._timer = null;
      this._open();
    }, delay);
  }

  /** Exponential, capped, with "equal jitter": between half and all of it. */
  _delay(attempt) {
    const base = Math.min(this._maxDelay, this._minDelay * Math.pow(2, attempt));
    return Math.round(base / 2 + (this._random() * base) / 2);
  }

  _refresh(code, reason) {
    this._status("offline", code, reason, { delay: null, refused: false });
    if (!this._onTokenExpired) {
      this._stop(code, reason);
      return;
    }
    Promise.resolve()
      .then(() => this._onTokenExpired())
      .then(
        (token) => {
          if (this._stopped) {
            return;
          }
          if (!token) {
            this._stop(code, reason + " (no new token)");
            return;
          }
          this.token = String(token);
          this._open(true);
        },
        (e) => {
          if (!this._stopped) {
            this._stop(code, reason + " (no new token: " + ((e && e.message) || e) + ")");
          }
        },
      );
  }

  _stop(code, reason) {
    this._stopped = true;
    this._ws = null;
    if (this._timer !== null) {
      this._clearTimeout(this._timer);
      this._timer = null;
    }
    const pending = Array.from(this._pending.values());
    this._pending.clear();
    for (const entry of pending) {
      entry.reject(new SendError("wsserver: stopped before the ack (" + code + " " + reason + ")", code, reason));
    }
    this._status("stopped", code, reason, {});
  }

  _received(raw) {
    let m;
    try {
      m = JSON.parse(raw);
    } catch (e) {
      return;
    }
    if (m === null || typeof m !== "object") {
      return;
    }
    if (typeof m.seq === "number") {
      if (this.lastSeq !== null && m.seq <= this.lastSeq) {
        return; // seen before this reconnect
      }
      this.lastSeq = m.seq;
      this._save();
    }
    const d = m.data && typeof m.data === "object" ? m.data : {};
    // the server's own messages come from user 0; a user cannot fake them
    if (String(m.sender) === "0") {
      switch (m.type) {
        case "message_ack": {
          const entry = this._pending.get(d.ack);
          if (entry) {
            this._pending.delete(d.ack);
            entry.resolve(d.id);
          }
          return;
        }
        case "history_gap":
          this._emit("gap", { since: d.since, first: d.first });
          return;
        case "notification_received":
          this._emit("delivered", { id: d.id, recipient: d.recipient });
          return;
        case "user_online":
        case "user_offline":
          this._emit("presence", { user: d.user, online: m.type === "user_online" });
          return;
      }
    }
    this._emit("message", m);
  }

  _load() {
    if (!this._store) {
      return null;
    }
    try {
      const seq = Number(this._store.getItem(this._storeKey));
      return this._store.getItem(this._storeKey) !== null && validSeq(seq) ? seq : null;
    } catch (e) {
      return null; // storage denied
    }
  }

  _save() {
    if (!this._store) {
      return;
    }
    try {
      // another tab of the same user may be further on: keep the newest
      const stored = this._load();
      if (stored === null || stored < this.lastSeq) {
        this._store.setItem(this._storeKey, String(this.lastSeq));
      }
    } catch (e) {
      // storage full or denied: memory still has it
    }
  }
}

/** Whether token is a jwt whose exp is at or before nowMs (not one: false). */
function jwtExpired(token, nowMs) {
  const part = token.split(".")[1];
  if (!part || typeof atob !== "function") {
    return false;
  }
  try {
    const base64 = part.replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(base64 + "===".slice((base64.length + 3) % 4)));
    return typeof claims.exp === "number" && claims.exp * 1000 <= nowMs;
  } catch (e) {
    return false;
  }
}

function validSeq(n) {
  return typeof n === "number" && Number.isSafeInteger(n) && n >= 0;
}

/** 96 random bits: this client's ack tokens differ from any other's. */
function randomPrefix() {
  const words = new Uint32Array(3);
  if (globalThis.crypto && globalThis.crypto.getRandomValues) {
    globalThis.crypto.getRandomValues(words);
  } else {
    for (let i = 0; i < words.length; i++) {
      words[i] = Math.floor(Math.random() * 0x100000000);
    }
  }
  return Array.from(words, (w) => w.toString(36)).join("") + "-";
}

export default connect;
