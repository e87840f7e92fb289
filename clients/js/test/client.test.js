// The state machine of wsserver.js with a fake WebSocket and a manual clock:
// node --test clients/js/test/*.test.js  (run by tests/test_jsclient.py as well)

import { test } from "node:test";
import assert from "node:assert/strict";

import { connect, SendError, VERSION } from "../wsserver.js";
import { ManualClock } from "./clock.js";

/** A WebSocket that the test opens, feeds and closes. */
function fakeSockets() {
  const made = [];
  class FakeWebSocket {
    constructor(url) {
      this.url = new URL(url);
      this.sent = [];
      this.closedWith = null;
      made.push(this);
    }
    send(frame) {
      this.sent.push(JSON.parse(frame));
    }
    close(code) {
      this.closedWith = code === undefined ? null : code;
    }
    // the test's side
    open() {
      this.onopen({});
    }
    receive(obj) {
      this.onmessage({ data: JSON.stringify(obj) });
    }
    drop(code, reason = "") {
      this.onclose({ code, reason });
    }
  }
  return { made, FakeWebSocket };
}

const tick = () => new Promise((resolve) => setImmediate(resolve));

function start(options = {}) {
  const clock = new ManualClock(1000);
  const { made, FakeWebSocket } = fakeSockets();
  const statuses = [];
  const messages = [];
  const client = connect({
    url: "ws://127.0.0.1:8085/chat",
    id: "alice",
    WebSocket: FakeWebSocket,
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    now: () => clock.now,
    random: () => 0.5,
    ...options,
  });
  client.on("status", (s) => statuses.push(s));
  client.on("message", (m) => messages.push(m));
  return { client, clock, made, statuses, messages };
}

function ack(ws, n, id) {
  ws.receive({ type: "message_ack", sender: 0, recipients: ["alice"], data: { ack: ws.sent[n].ack, id } });
}

test("the version is the server's", () => {
  assert.match(VERSION, /^\d+\.\d+\.\d+$/);
});

test("connects with the id, then online; the token as query parameter", async () => {
  const { made, statuses } = start({ token: "t.k.n" });
  await tick();
  assert.equal(made.length, 1);
  const url = made[0].url;
  assert.equal(url.pathname, "/chat");
  assert.equal(url.searchParams.get("id"), "alice");
  assert.equal(url.searchParams.get("token"), "t.k.n");
  assert.equal(url.searchParams.get("since"), null);
  made[0].open();
  assert.deepEqual(statuses.map((s) => s.state), ["connecting", "online"]);
});

test("http urls become ws urls; a query in the url is kept", async () => {
  const { made } = start({ url: "https://h.example/ws?x=1", id: 7 });
  await tick();
  assert.equal(made[0].url.protocol, "wss:");
  assert.equal(made[0].url.searchParams.get("x"), "1");
  assert.equal(made[0].url.searchParams.get("id"), "7");
});

test("resumes after the newest seq; a copy seen before is dropped", async () => {
  const { made, clock, messages } = start();
  await tick();
  made[0].open();
  for (const seq of [1, 2, 3]) {
    made[0].receive({ id: "m" + seq, type: "text", text: "t" + seq, sender: "bob", recipients: ["alice"], seq });
  }
  made[0].drop(1006);
  clock.advance(375);
  assert.equal(made[1].url.searchParams.get("since"), "3");
  made[1].open();
  made[1].receive({ id: "m3", type: "text", text: "t3", sender: "bob", recipients: ["alice"], seq: 3 });
  made[1].receive({ id: "m4", type: "text", text: "t4", sender: "bob", recipients: ["alice"], seq: 4 });
  assert.deepEqual(messages.map((m) => m.seq), [1, 2, 3, 4]);
});

test("since given starts there; storage local keeps the newest seq across clients", async () => {
  const store = new Map();
  const localStorage = { getItem: (k) => (store.has(k) ? store.get(k) : null), setItem: (k, v) => store.set(k, v) };
  const first = start({ storage: "local", localStorage, since: 5 });
  await tick();
  assert.equal(first.made[0].url.searchParams.get("since"), "5");
  first.made[0].open();
  first.made[0].receive({ type: "text", text: "x", sender: "bob", seq: 9 });
  first.client.close();
  const second = start({ storage: "local", localStorage });
  await tick();
  assert.equal(second.made[0].url.searchParams.get("since"), "9");
  // a client that is behind does not move it back
  const third = start({ storage: "local", localStorage, since: 2 });
  await tick();
  third.made[0].open();
  third.made[0].receive({ type: "text", text: "x", sender: "bob", seq: 3 });
  assert.equal(store.get("wsserver.since alice ws://127.0.0.1:8085/chat"), "9");
  // another user has its own
  const other = start({ storage: "local", localStorage, id: "bob" });
  await tick();
  assert.equal(other.made[0].url.searchParams.get("since"), null);
});

test("storage is memory or local", () => {
  assert.throws(() => connect({ url: "ws://h/chat", id: 1, storage: "session" }), TypeError);
  assert.throws(() => connect({ id: 1 }), TypeError);
});

test("send resolves with the id on message_ack; the frame is a text message with an ack", async () => {
  const { client, made } = start();
  await tick();
  made[0].open();
  const sent = client.send(["bob", 7], "hi", { any: "json" });
  assert.equal(made[0].sent.length, 1);
  const frame = made[0].sent[0];
  assert.deepEqual(
    { type: frame.type, text: frame.text, recipients: frame.recipients, data: frame.data },
    { type: "text", text: "hi", recipients: ["bob", 7], data: { any: "json" } },
  );
  assert.ok(typeof frame.ack === "string" && frame.ack.length > 0 && frame.ack.length <= 64);
  assert.equal(client.pending, 1);
  ack(made[0], 0, "ID-1");
  assert.equal(await sent, "ID-1");
  assert.equal(client.pending, 0);
});

test("each send has its own ack token", async () => {
  const { client, made } = start();
  await tick();
  made[0].open();
  client.send(["bob"], "a");
  client.send(["bob"], "b");
  assert.notEqual(made[0].sent[0].ack, made[0].sent[1].ack);
});

test("an ack from another user than the server is a message, and acks nothing", async () => {
  const { client, made, messages } = start();
  await tick();
  made[0].open();
  let acked = false;
  client.send(["bob"], "a").then(() => (acked = true));
  made[0].receive({ type: "message_ack", sender: "bob", data: { ack: made[0].sent[0].ack, id: "fake" } });
  await tick();
  assert.equal(acked, false);
  assert.equal(messages.length, 1);
});

test("the outbox: sent while offline, they go out in order once online", async () => {
  const { client, made } = start();
  const one = client.send(["bob"], "one");
  const two = client.send(["bob"], "two");
  await tick();
  assert.equal(made[0].sent.length, 0);
  made[0].open();
  assert.deepEqual(made[0].sent.map((f) => f.text), ["one", "two"]);
  ack(made[0], 0, "I1");
  ack(made[0], 1, "I2");
  assert.deepEqual(await Promise.all([one, two]), ["I1", "I2"]);
});

test("unacked messages are resent after a reconnect with the same ack token, acked once", async () => {
  const { client, made, clock } = start();
  await tick();
  made[0].open();
  const first = client.send(["bob"], "one");
  const second = client.send(["bob"], "two");
  ack(made[0], 0, "I1");
  made[0].drop(1006);
  const third = client.send(["bob"], "three");
  clock.advance(375);
  made[1].open();
  assert.deepEqual(made[1].sent.map((f) => f.text), ["two", "three"]);
  assert.equal(made[1].sent[0].ack, made[0].sent[1].ack);
  ack(made[1], 0, "I2");
  ack(made[1], 0, "I2"); // a second ack of the same token: nothing
  ack(made[1], 1, "I3");
  assert.deepEqual(await Promise.all([first, second, third]), ["I1", "I2", "I3"]);
});

test("the outbox has a bound", async () => {
  const { client } = start({ maxOutbox: 2 });
  client.send(["bob"], "1");
  client.send(["bob"], "2");
  await assert.rejects(client.send(["bob"], "3"), SendError);
  await assert.rejects(client.send([], "x"), TypeError);
});

for (const code of [1001, 1006, 4010, 4011, 1011, 4029]) {
  test(`${code} reconnects`, async () => {
    const { made, clock, statuses } = start();
    await tick();
    made[0].open();
    made[0].drop(code, "why");
    assert.deepEqual(statuses.at(-1), { state: "offline", code, reason: "why", delay: 375, refused: false });
    clock.advance(375);
    assert.equal(made.length, 2);
  });
}

for (const code of [4050, 4008, 4000, 4001, 1009]) {
  test(`${code} stops and reports; unacked sends are rejected`, async () => {
    const { client, made, clock, statuses } = start();
    await tick();
    made[0].open();
    const sent = client.send(["bob"], "x");
    made[0].drop(code, "Unauthorized");
    assert.deepEqual(statuses.at(-1), { state: "stopped", code, reason: "Unauthorized" });
    const error = await sent.catch((e) => e);
    assert.ok(error instanceof SendError);
    assert.equal(error.code, code);
    clock.advance(3600000);
    assert.equal(made.length, 1);
    assert.equal(clock.timers.length, 0);
    await assert.rejects(client.send(["bob"], "y"), SendError);
  });
}

test("4051 asks for a new token, then reconnects with it at once", async () => {
  let asked = 0;
  const { made, statuses } = start({
    token: "old",
    onTokenExpired: () => {
      asked += 1;
      return Promise.resolve("new");
    },
  });
  await tick();
  made[0].open();
  made[0].drop(4051, "Token expired");
  assert.deepEqual(statuses.at(-1), { state: "offline", code: 4051, reason: "Token expired", delay: null, refused: false });
  await tick();
  assert.equal(asked, 1);
  assert.equal(made.length, 2);
  assert.equal(made[1].url.searchParams.get("token"), "new");
});

test("4051 with no callback, or no token from it, stops", async () => {
  for (const onTokenExpired of [null, () => null, () => Promise.reject(new Error("logged out"))]) {
    const { made, statuses } = start({ token: "old", onTokenExpired });
    await tick();
    made[0].open();
    made[0].drop(4051, "Token expired");
    await tick();
    assert.equal(statuses.at(-1).state, "stopped");
    assert.equal(statuses.at(-1).code, 4051);
    assert.equal(made.length, 1);
  }
});

test("backoff: doubling, capped, with jitter between half and all of it", async () => {
  const randoms = [0, 1, 0.5, 0, 1, 0, 1, 0, 1, 0.25];
  let i = 0;
  const { made, clock, statuses } = start({ random: () => randoms[i++], minDelay: 500, maxDelay: 8000 });
  await tick();
  const delays = [];
  for (let n = 0; n < 8; n++) {
    made.at(-1).drop(1006);
    const s = statuses.at(-1);
    assert.equal(s.refused, true);
    delays.push(s.delay);
    clock.advance(s.delay);
  }
  // bases 500, 1000, 2000, 4000, 8000 (cap), 8000 ...
  assert.deepEqual(delays, [250, 1000, 1500, 2000, 8000, 4000, 8000, 4000]);
  assert.equal(made.length, 9);
});

test("the backoff starts over after a connection that stayed up", async () => {
  const { made, clock, statuses } = start({ random: () => 1 });
  await tick();
  made[0].drop(1006);
  clock.advance(500);
  made[1].drop(1006);
  assert.equal(statuses.at(-1).delay, 1000);
  clock.advance(1000);
  made[2].open();
  clock.advance(1000); // up only briefly: the backoff goes on
  made[2].drop(1006);
  assert.equal(statuses.at(-1).delay, 2000);
  clock.advance(2000);
  made[3].open();
  clock.advance(5000);
  made[3].drop(1001);
  assert.equal(statuses.at(-1).delay, 500);
});

test("a connection that does not open in time is closed and retried", async () => {
  const { made, clock, statuses } = start({ openTimeout: 3000 });
  await tick();
  clock.advance(3000);
  assert.equal(made[0].closedWith, null);
  assert.deepEqual(statuses.at(-1).state, "offline");
  assert.equal(statuses.at(-1).refused, true);
  made[0].drop(1006); // the late close of the abandoned socket: ignored
  assert.equal(statuses.filter((s) => s.state === "offline").length, 1);
  clock.advance(statuses.at(-1).delay);
  assert.equal(made.length, 2);
});

test("close() closes with 1000 and never reconnects", async () => {
  const { client, made, clock, statuses } = start();
  await tick();
  made[0].open();
  const sent = client.send(["bob"], "x");
  client.close();
  assert.equal(made[0].closedWith, 1000);
  made[0].drop(1000);
  assert.deepEqual(statuses.at(-1), { state: "stopped", code: 1000, reason: "closed by the client" });
  await assert.rejects(sent, SendError);
  clock.advance(3600000);
  assert.equal(made.length, 1);
});

test("close() before the first connection opens none", async () => {
  const { client, made } = start();
  client.close();
  await tick();
  assert.equal(made.length, 0);
});

test("delivered, presence and gap events; bookkeeping is no message", async () => {
  const { client, made, messages } = start();
  const delivered = [];
  const presence = [];
  const gaps = [];
  client.on("delivered", (d) => delivered.push(d));
  client.on("presence", (p) => presence.push(p));
  client.on("gap", (g) => gaps.push(g));
  await tick();
  made[0].open();
  made[0].receive({ type: "notification_received", sender: 0, recipients: ["alice"], data: { id: "M", recipient: "bob" } });
  made[0].receive({ type: "user_online", sender: 0, data: { user: "bob" } });
  made[0].receive({ type: "user_offline", sender: 0, data: { user: "bob" } });
  made[0].receive({ type: "history_gap", sender: 0, recipients: ["alice"], data: { since: 1, first: 4 }, seq: 3 });
  made[0].receive({ type: "text", text: "x", sender: "bob", seq: 4 });
  assert.deepEqual(delivered, [{ id: "M", recipient: "bob" }]);
  assert.deepEqual(presence, [{ user: "bob", online: true }, { user: "bob", online: false }]);
  assert.deepEqual(gaps, [{ since: 1, first: 4 }]);
  assert.deepEqual(messages.map((m) => m.text), ["x"]);
});

test("a listener that throws does not stop the others, nor the flush", async (t) => {
  const { client, made, statuses } = start();
  const thrown = [];
  globalThis.reportError = (e) => thrown.push(e);
  t.after(() => delete globalThis.reportError);
  client.on("status", () => {
    throw new Error("app bug");
  });
  await tick();
  client.send(["bob"], "x");
  made[0].open();
  assert.equal(made[0].sent.length, 1);
  assert.deepEqual(thrown.map((e) => e.message), ["app bug", "app bug"]); // connecting, online
  assert.deepEqual(statuses.map((s) => s.state), ["connecting", "online"]);
});

test("off() and the function on() returns remove a listener", async () => {
  const { client, made } = start();
  const got = [];
  const listener = (m) => got.push(m);
  const remove = client.on("message", listener);
  await tick();
  made[0].open();
  made[0].receive({ type: "text", text: "a", sender: "bob" });
  remove();
  made[0].receive({ type: "text", text: "b", sender: "bob" });
  assert.equal(got.length, 1);
});

function jwtWith(claims) {
  const part = (obj) => Buffer.from(JSON.stringify(obj)).toString("base64url");
  return part({ alg: "HS256", typ: "JWT" }) + "." + part(claims) + ".signature";
}

test("a jwt already expired is refreshed before connecting, once", async () => {
  let asked = 0;
  // the clock says 1000 ms: exp 1 is now, exp 0 past, exp 2 ahead
  const tokens = [jwtWith({ sub: "alice", exp: 0 })];
  const { made, statuses } = start({
    token: jwtWith({ sub: "alice", exp: 1 }),
    onTokenExpired: () => {
      asked += 1;
      return tokens.shift();
    },
  });
  await tick();
  assert.equal(asked, 1);
  assert.deepEqual(statuses.slice(0, 1), [
    { state: "offline", code: 4051, reason: "Token expired (before connecting)", delay: null, refused: false },
  ]);
  // the new one is expired too by this clock: the server decides
  assert.equal(made.length, 1);
  assert.equal(made[0].url.searchParams.get("token"), jwtWith({ sub: "alice", exp: 0 }));
});

test("a jwt not expired, a token that is no jwt, or no callback: connect as it is", async () => {
  for (const [token, onTokenExpired] of [
    [jwtWith({ sub: "alice", exp: 2 }), () => "other"],
    [jwtWith({ sub: "alice" }), () => "other"],
    ["opaque-token", () => "other"],
    ["a.%%%.b", () => "other"],
    [jwtWith({ sub: "alice", exp: 0 }), null],
  ]) {
    const { made } = start({ token, onTokenExpired });
    await tick();
    assert.equal(made.length, 1, token);
    assert.equal(made[0].url.searchParams.get("token"), token);
  }
});
