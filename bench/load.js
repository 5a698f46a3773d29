#!/usr/bin/env node
// Load generator of the wampchat bench: raw WAMP v2 over WebSocket (the `ws` package), JSON or
// MessagePack, cheap per message (no Autobahn|JS), bounded in count and in time.
//
//   node bench/load.js --url ws://127.0.0.1:8080/ws --tokens t.json --scenario fanout --subscribers 100
//   node bench/load.js --url ws://127.0.0.1:8080/ws --tokens t.json --scenario rpc --callers 10
//   node bench/load.js ... --scenario handshake --token-set existing --concurrency 16
//   node bench/load.js ... --scenario idle --sessions 1000,5000
//
// Ticket auth when challenged: HELLO with authmethods ["ticket"], then AUTHENTICATE with an
// access token. --tokens names a JSON file {"existing": [...], "first": [[...], ...],
// "backend": "..."} (bench/run.py writes it): sessions take `existing` tokens in turn, the
// RPC callee the `backend` one; --token-set first:<i> makes the handshake scenario use block
// i of first-time users, each token once. Without --tokens, the ticket is read from the
// environment variable named by --ticket-env.
//
// MessagePack (--serializer msgpack) uses the small codec below rather than msgpack5 (found
// in node_modules as a dependency of autobahn): msgpack5 decodes a bench EVENT in ~3 us,
// eight times JSON.parse, which would make this process the bottleneck at 1000 subscribers.
//
// Handshake with the orchestrator (bench/run.py), so that it can read the router's CPU time
// exactly around each measured step: once every session is up (and warmed up), for each
// step it prints {"phase":"ready","step":...} and waits for a line on stdin, measures,
// prints {"phase":"done","step":...}; at the end it says GOODBYE everywhere and prints
// {"phase":"result", ...} with every step's figures. With --no-sync it does not wait.
// Every line on stdout is one JSON object; a failure prints {"phase":"error", ...}.
//
// fanout: N subscriber sessions on one topic, one publisher session publishing args
//   [performance.now(), seq, step]. Step `saturation`: at most --window publications in
//   flight (one is complete when all N subscribers got it); step `fixed_rate` (with
//   --rate > 0): --rate publications/s whatever the server does, for latency at the same
//   load. events/s = events received / (last event - first publish); latency = receive
//   time - send time from the event args (same process, same clock).
// rpc: one callee registers an echo procedure; C caller sessions each keep one call in
//   flight; calls/s and latency from CALL sent to RESULT received.
// handshake: --concurrency workers each in a closed loop of: connect, HELLO, CHALLENGE,
//   AUTHENTICATE, WELCOME, GOODBYE (answered), WebSocket close, on a plain TCP socket
//   (handshakeOnce: the upgrade and the frames by hand, not `ws`). handshakes/s and latency
//   from connect to close (and to WELCOME); `existing` tokens in turn (all used once in
//   the warm-up, so the users exist), or a block of first-time users, each once.
// With --rate > 0, rpc and handshake (existing users) add a step `fixed_rate`: calls or
//   handshakes offered at that rate whatever the server does (open loop), for latency at
//   the same load for every server.
// idle: opens authenticated sessions up to each count of --sessions, one step per count,
//   then waits --settle seconds, so that the orchestrator reads the router's RSS.
'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');
const net = require('node:net');
const { performance } = require('node:perf_hooks');
const readline = require('node:readline');
const WebSocket = require('ws');

const HELLO = 1, WELCOME = 2, ABORT = 3, CHALLENGE = 4, AUTHENTICATE = 5, GOODBYE = 6, ERROR = 8;
const PUBLISH = 16, SUBSCRIBE = 32, SUBSCRIBED = 33, EVENT = 36;
const CALL = 48, RESULT = 50, REGISTER = 64, REGISTERED = 65, INVOCATION = 68, YIELD = 70;

const MAX_SAMPLES = 4000000;          // latency samples kept per run (32 MB of float64)

// -- MessagePack: just the types WAMP messages of the bench carry ------------------------------

const mpScratch = Buffer.allocUnsafe(1 << 20);

function mpEncode(value) {
  const end = mpWrite(value, mpScratch, 0);
  return Buffer.from(mpScratch.subarray(0, end));
}

function mpWrite(v, b, o) {
  if (v === null || v === undefined) { b[o] = 0xc0; return o + 1; }
  if (v === false) { b[o] = 0xc2; return o + 1; }
  if (v === true) { b[o] = 0xc3; return o + 1; }
  if (typeof v === 'number') {
    if (Number.isInteger(v) && v >= 0 && v <= Number.MAX_SAFE_INTEGER) {
      if (v < 128) { b[o] = v; return o + 1; }
      if (v < 0x100000000) { b[o] = 0xce; b.writeUInt32BE(v, o + 1); return o + 5; }
      b[o] = 0xcf; b.writeBigUInt64BE(BigInt(v), o + 1); return o + 9;
    }
    if (Number.isInteger(v) && v < 0 && v >= -0x80000000) {
      if (v >= -32) { b[o] = v & 0xff; return o + 1; }
      b[o] = 0xd2; b.writeInt32BE(v, o + 1); return o + 5;
    }
    b[o] = 0xcb; b.writeDoubleBE(v, o + 1); return o + 9;
  }
  if (typeof v === 'string') {
    const n = Buffer.byteLength(v);
    if (n < 32) { b[o++] = 0xa0 | n; } else if (n < 0x100) { b[o++] = 0xd9; b[o++] = n; } else if (n < 0x10000) { b[o++] = 0xda; b.writeUInt16BE(n, o); o += 2; } else { b[o++] = 0xdb; b.writeUInt32BE(n, o); o += 4; }
    return o + b.write(v, o);
  }
  if (Array.isArray(v)) {
    const n = v.length;
    if (n < 16) { b[o++] = 0x90 | n; } else if (n < 0x10000) { b[o++] = 0xdc; b.writeUInt16BE(n, o); o += 2; } else { b[o++] = 0xdd; b.writeUInt32BE(n, o); o += 4; }
    for (let i = 0; i < n; i++) o = mpWrite(v[i], b, o);
    return o;
  }
  if (typeof v === 'object') {
    const keys = Object.keys(v), n = keys.length;
    if (n < 16) { b[o++] = 0x80 | n; } else { b[o++] = 0xde; b.writeUInt16BE(n, o); o += 2; }
    for (const k of keys) { o = mpWrite(k, b, o); o = mpWrite(v[k], b, o); }
    return o;
  }
  throw new Error(`msgpack: cannot encode ${typeof v}`);
}

function mpDecode(buffer) {
  const state = { b: buffer, o: 0 };
  return mpRead(state);
}

function mpRead(s) {
  const b = s.b, t = b[s.o++];
  if (t < 0x80) return t;
  if (t >= 0xe0) return t - 0x100;
  if ((t & 0xf0) === 0x90) return mpArray(s, t & 0x0f);
  if ((t & 0xf0) === 0x80) return mpMap(s, t & 0x0f);
  if ((t & 0xe0) === 0xa0) return mpStr(s, t & 0x1f);
  let v;
  switch (t) {
    case 0xc0: return null;
    case 0xc2: return false;
    case 0xc3: return true;
    case 0xcc: return b[s.o++];
    case 0xcd: v = b.readUInt16BE(s.o); s.o += 2; return v;
    case 0xce: v = b.readUInt32BE(s.o); s.o += 4; return v;
    case 0xcf: v = Number(b.readBigUInt64BE(s.o)); s.o += 8; return v;
    case 0xd0: v = b.readInt8(s.o); s.o += 1; return v;
    case 0xd1: v = b.readInt16BE(s.o); s.o += 2; return v;
    case 0xd2: v = b.readInt32BE(s.o); s.o += 4; return v;
    case 0xd3: v = Number(b.readBigInt64BE(s.o)); s.o += 8; return v;
    case 0xca: v = b.readFloatBE(s.o); s.o += 4; return v;
    case 0xcb: v = b.readDoubleBE(s.o); s.o += 8; return v;
    case 0xd9: return mpStr(s, b[s.o++]);
    case 0xda: v = b.readUInt16BE(s.o); s.o += 2; return mpStr(s, v);
    case 0xdb: v = b.readUInt32BE(s.o); s.o += 4; return mpStr(s, v);
    case 0xc4: v = b[s.o++]; s.o += v; return b.subarray(s.o - v, s.o);
    case 0xc5: v = b.readUInt16BE(s.o); s.o += 2 + v; return b.subarray(s.o - v, s.o);
    case 0xc6: v = b.readUInt32BE(s.o); s.o += 4 + v; return b.subarray(s.o - v, s.o);
    case 0xdc: v = b.readUInt16BE(s.o); s.o += 2; return mpArray(s, v);
    case 0xdd: v = b.readUInt32BE(s.o); s.o += 4; return mpArray(s, v);
    case 0xde: v = b.readUInt16BE(s.o); s.o += 2; return mpMap(s, v);
    case 0xdf: v = b.readUInt32BE(s.o); s.o += 4; return mpMap(s, v);
    default: throw new Error(`msgpack: unsupported type byte 0x${t.toString(16)}`);
  }
}

function mpArray(s, n) {
  const a = new Array(n);
  for (let i = 0; i < n; i++) a[i] = mpRead(s);
  return a;
}

function mpMap(s, n) {
  const m = {};
  for (let i = 0; i < n; i++) { const k = mpRead(s); m[k] = mpRead(s); }
  return m;
}

function mpStr(s, n) {
  const v = s.b.toString('utf8', s.o, s.o + n);
  s.o += n;
  return v;
}

const CODECS = {
  json: { protocol: 'wamp.2.json', encode: (m) => JSON.stringify(m), decode: (d) => JSON.parse(d) },
  msgpack: { protocol: 'wamp.2.msgpack', encode: mpEncode, decode: mpDecode },
};

// Tokens: {"existing": [...], "first": [[...], ...], "backend": "..."}, or one ticket from the env.
let tokenFile = null;
let nextExisting = 0;

function loadTokens(opts) {
  if (opts.tokens) tokenFile = JSON.parse(fs.readFileSync(opts.tokens, 'utf8'));
}

function userToken(opts) {
  if (!tokenFile) return process.env[opts.ticketEnv] || '';
  return tokenFile.existing[nextExisting++ % tokenFile.existing.length];
}

function backendToken(opts) {
  return tokenFile ? tokenFile.backend : (process.env[opts.ticketEnv] || '');
}

function parseArgs(argv) {
  const opts = {
    url: 'ws://127.0.0.1:8080/ws', realm: 'bench', authid: 'bench', ticketEnv: 'BENCH_TICKET',
    scenario: 'fanout', subscribers: 100, callers: 1, duration: 5, window: 4, rate: 0,
    maxCount: 1000000, connectConcurrency: 50, timeout: 120, sync: true, payload: 0,
    serializer: 'json', tokens: '', tokenSet: 'existing', concurrency: 16, sessions: '1000',
    settle: 1,
  };
  const names = {
    '--url': 'url', '--realm': 'realm', '--authid': 'authid', '--ticket-env': 'ticketEnv',
    '--scenario': 'scenario', '--subscribers': 'subscribers', '--callers': 'callers',
    '--duration': 'duration', '--window': 'window', '--rate': 'rate', '--max-count': 'maxCount',
    '--connect-concurrency': 'connectConcurrency', '--timeout': 'timeout', '--payload': 'payload',
    '--serializer': 'serializer', '--tokens': 'tokens', '--token-set': 'tokenSet',
    '--concurrency': 'concurrency', '--sessions': 'sessions', '--settle': 'settle',
  };
  for (let i = 2; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--no-sync') { opts.sync = false; continue; }
    const key = names[arg];
    if (!key || i + 1 >= argv.length) throw new Error(`unknown or incomplete option ${arg}`);
    const value = argv[++i];
    opts[key] = typeof opts[key] === 'number' ? Number(value) : value;
  }
  return opts;
}

let resultEmitted = false;

function emit(obj) {
  if (obj.phase === 'result' || obj.phase === 'error') resultEmitted = true;
  process.stdout.write(JSON.stringify(obj) + '\n');
}

// Nothing left to wait for without a result means a session was lost mid-run.
process.on('exit', (code) => {
  if (!resultEmitted) {
    process.stdout.write(JSON.stringify({ phase: 'error', error: 'stalled: connection lost or nothing to wait for' }) + '\n');
    process.exitCode = code || 3;
  }
});

// A WAMP session over one WebSocket: handshake, request/response by request id, and
// one callback each for EVENT and INVOCATION. No checks beyond what the bench needs.
class Session {
  constructor(opts, token) {
    this.opts = opts;
    this.token = token === undefined ? userToken(opts) : token;
    this.codec = CODECS[opts.serializer];
    this.nextRequest = 1;
    this.pending = new Map();          // request id -> {resolve, reject}
    this.onEvent = null;               // (message) => void
    this.onInvocation = null;          // (message) => void
    this.onResult = null;              // (message) => void, RESULTs of calls made with callRaw
    this.closed = null;
  }

  connect() {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.opts.url, [this.codec.protocol], { perMessageDeflate: false });
      this.ws = ws;
      this.joined = resolve;
      this.failed = reject;
      this.closed = new Promise((done) => ws.on('close', done));
      ws.on('error', (err) => reject(err));
      ws.on('close', (code, reason) => {
        if (this.id === undefined) reject(new Error(`closed before WELCOME: ${code} ${reason}`));
        for (const entry of this.pending.values()) entry.reject(new Error(`closed: ${code}`));
        this.pending.clear();
      });
      ws.on('open', () => {
        this.send([HELLO, this.opts.realm, {
          roles: { publisher: {}, subscriber: {}, caller: {}, callee: {} },
          authmethods: ['ticket'], ...(tokenFile ? {} : { authid: this.opts.authid }),
        }]);
      });
      ws.on('message', (data) => this.handle(this.codec.decode(data)));
    });
  }

  // One decoded WAMP message from the router.
  handle(message) {
    switch (message[0]) {
      case EVENT: this.onEvent(message); return;
      case RESULT: this.onResult(message); return;
      case INVOCATION: this.onInvocation(message); return;
      case CHALLENGE:
        this.send([AUTHENTICATE, this.token, {}]); return;
      case WELCOME: this.id = message[1]; this.joined(this); return;
      case ABORT: this.failed(new Error(`ABORT ${message[2]} ${JSON.stringify(message[1])}`)); return;
      case SUBSCRIBED: case REGISTERED: this.settle(message[1], message); return;
      case ERROR: this.settle(message[2], null, new Error(`ERROR ${message[4]}`)); return;
      case GOODBYE:
        if (!this.saidGoodbye) this.send([GOODBYE, {}, 'wamp.close.goodbye_and_out']);
        this.ws.close(1000); return;
      default: return;
    }
  }

  // Fan-out subscribers, once subscribed: frames read straight off the socket instead of
  // through ws's receiver (whose per-message cost, with JSON.parse of every EVENT, made the
  // generator as busy as the fastest router it loads). Router frames are unmasked and
  // unfragmented; pings are answered; an EVENT's args, the last array of a JSON EVENT without
  // padding, are parsed alone. Anything else goes through handle() as before.
  readFramesDirectly() {
    const ws = this.ws, socket = ws._socket, json = this.codec === CODECS.json;
    const fastEvents = json && !(this.opts.payload > 0);
    socket.removeAllListeners('data');
    socket.on('data', frameReader((opcode, payload) => {
      if (opcode === 1 || opcode === 2) {
        if (fastEvents && payload[1] === 0x33 && payload[2] === 0x36 && payload[3] === 0x2c) {
          // [36,sub,pub,{},[ts,seq,step]]: the args array alone
          const start = payload.lastIndexOf(0x5b);
          this.onEvent([EVENT, 0, 0, null, JSON.parse(payload.latin1Slice(start, payload.length - 1))]);
        } else {
          this.handle(this.codec.decode(payload));
        }
      } else if (opcode === 9) {
        ws.pong(payload);
      } else if (opcode === 8) {
        socket.destroy();
        return false;
      }
      return true;
    }));
  }

  send(message) {
    this.ws.send(this.codec.encode(message));
  }

  request(message) {
    const requestId = this.nextRequest++;
    message[1] = requestId;
    return new Promise((resolve, reject) => {
      this.pending.set(requestId, { resolve, reject });
      this.send(message);
    });
  }

  settle(requestId, value, error) {
    const entry = this.pending.get(requestId);
    if (!entry) return;
    this.pending.delete(requestId);
    if (error) entry.reject(error); else entry.resolve(value);
  }

  subscribe(topic) { return this.request([SUBSCRIBE, 0, {}, topic]); }

  register(procedure) { return this.request([REGISTER, 0, {}, procedure]); }

  async close(timeoutMs) {
    if (this.ws.readyState === WebSocket.OPEN) {
      this.saidGoodbye = true;
      this.send([GOODBYE, {}, 'wamp.close.close_realm']);
      setTimeout(() => this.ws.close(1000), 200).unref();
    }
    const timer = new Promise((done) => setTimeout(done, timeoutMs).unref());
    await Promise.race([this.closed, timer]);
    if (this.ws.readyState !== WebSocket.CLOSED) this.ws.terminate();
  }
}

// A 'data' listener that splits a router's byte stream into WebSocket frames and calls
// onFrame(opcode, payload) for each complete one until it returns false. Router frames are
// unmasked and, for the bench's messages, unfragmented.
function frameReader(onFrame) {
  let pending = null;
  return (chunk) => {
    const buf = pending ? Buffer.concat([pending, chunk]) : chunk;
    let off = 0;
    while (buf.length - off >= 2) {
      const opcode = buf[off] & 0x0f;
      let len = buf[off + 1] & 0x7f, header = 2;
      if (len === 126) {
        if (buf.length - off < 4) break;
        len = buf.readUInt16BE(off + 2); header = 4;
      } else if (len === 127) {
        if (buf.length - off < 10) break;
        len = Number(buf.readBigUInt64BE(off + 2)); header = 10;
      }
      if (buf.length - off < header + len) break;
      const payload = buf.subarray(off + header, off + header + len);
      off += header + len;
      if (onFrame(opcode, payload) === false) return;
    }
    pending = off === buf.length ? null : buf.subarray(off);
  };
}

// Random bytes for WebSocket keys and masks, drawn from a pool refilled 64 KiB at a time.
let randomPool = Buffer.alloc(0), randomOffset = 0;
function randomBytes(n) {
  if (randomOffset + n > randomPool.length) { randomPool = crypto.randomBytes(65536); randomOffset = 0; }
  randomOffset += n;
  return randomPool.subarray(randomOffset - n, randomOffset);
}

// One client frame (FIN set): text for strings, binary for buffers, masked as a client must.
function clientFrame(data, opcode) {
  const payload = typeof data === 'string' ? Buffer.from(data) : data;
  const len = payload.length, header = len < 126 ? 2 : len < 65536 ? 4 : 10;
  const frame = Buffer.allocUnsafe(header + 4 + len);
  frame[0] = 0x80 | (opcode || (typeof data === 'string' ? 1 : 2));
  if (header === 2) frame[1] = 0x80 | len;
  else if (header === 4) { frame[1] = 0x80 | 126; frame.writeUInt16BE(len, 2); }
  else { frame[1] = 0x80 | 127; frame.writeBigUInt64BE(BigInt(len), 2); }
  const mask = randomBytes(4);
  mask.copy(frame, header);
  for (let i = 0; i < len; i++) frame[header + 4 + i] = payload[i] ^ mask[i & 3];
  return frame;
}

async function openSessions(opts, count, token) {
  const sessions = new Array(count);
  let next = 0;
  async function worker() {
    while (next < count) {
      const index = next++;
      sessions[index] = await new Session(opts, token).connect();
    }
  }
  const workers = [];
  for (let i = 0; i < Math.min(opts.connectConcurrency, count); i++) workers.push(worker());
  await Promise.all(workers);
  return sessions;
}

// GOODBYE and close, a few sessions at a time: a burst of 1000 closing handshakes would
// time out in a busy server and only fill its log.
async function closeSessions(sessions, concurrency) {
  let next = 0;
  async function worker() {
    while (next < sessions.length) await sessions[next++].close(3000);
  }
  const workers = [];
  for (let i = 0; i < Math.min(concurrency, sessions.length); i++) workers.push(worker());
  await Promise.all(workers);
}

function waitLine(rl) {
  return new Promise((resolve) => rl.once('line', resolve));
}

// A promise resolved after ms, and a function that cancels its timer.
function deadline(ms) {
  let timer;
  const promise = new Promise((resolve) => { timer = setTimeout(resolve, ms); });
  return [promise, () => clearTimeout(timer)];
}

// Nearest-rank percentiles of the first n samples (sorted in place).
function percentiles(samples, n) {
  const sorted = samples.subarray(0, n).sort();
  const at = (p) => (n === 0 ? null : sorted[Math.min(n - 1, Math.ceil(p * n) - 1)]);
  let sum = 0;
  for (let i = 0; i < n; i++) sum += sorted[i];
  return { p50_ms: at(0.5), p90_ms: at(0.9), p99_ms: at(0.99), max_ms: at(1), mean_ms: n ? sum / n : null };
}

// One measured fan-out step. mode.window: closed loop, at most `window` publications in
// flight (throughput at saturation); mode.rate: open loop at `rate` publications/s (latency
// at the same load for every server). Events of other steps (args[2] != step) are ignored.
function runFanout(opts, mode, subscribers, publisher, topic, samples, maxPubs, step) {
  const n = subscribers.length;
  const received = new Uint32Array(maxPubs);   // publication seq -> events received
  let published = 0, completed = 0, events = 0, stored = 0, lastEventAt = 0, stopped = false;
  let tickTimer = null;
  const padding = opts.payload > 0 ? 'x'.repeat(opts.payload) : null;
  let finish;
  const finished = new Promise((resolve) => { finish = resolve; });

  function send() {
    const args = [performance.now(), published, step];
    if (padding) args.push(padding);
    publisher.send([PUBLISH, published + 1, {}, topic, args]);
    published++;
  }

  function maybeFinish() {
    if ((stopped || published >= maxPubs) && completed === published) finish();
  }

  function publishMore() {
    while (!stopped && published - completed < mode.window && published < maxPubs) send();
    maybeFinish();
  }

  function tick() {
    tickTimer = null;
    if (stopped) return;
    const due = Math.min(maxPubs, Math.floor((performance.now() - startedAt) * mode.rate / 1000) + 1);
    while (published < due) send();
    if (published >= maxPubs) { stopped = true; maybeFinish(); return; }
    tickTimer = setTimeout(tick, 1);
  }

  function onEvent(message) {
    const now = performance.now();
    const args = message[4];
    if (args[2] !== step) return;
    if (stored < samples.length) samples[stored++] = now - args[0];
    events++;
    lastEventAt = now;
    if (++received[args[1]] === n) {
      completed++;
      if (mode.window) publishMore(); else maybeFinish();
    }
  }
  for (const s of subscribers) s.onEvent = onEvent;

  const startedAt = performance.now();
  const stopTimer = setTimeout(() => { stopped = true; maybeFinish(); }, opts.duration * 1000);
  if (mode.window) publishMore(); else tick();
  const [drainLimit, cancelDrainLimit] = deadline(opts.duration * 1000 + 10000);
  return Promise.race([finished, drainLimit]).then(() => {
    clearTimeout(stopTimer);
    if (tickTimer) clearTimeout(tickTimer);
    cancelDrainLimit();
    stopped = true;
    const elapsedMs = (lastEventAt || performance.now()) - startedAt;
    return {
      publications: published, events, expected_events: published * n,
      missing_events: published * n - events, elapsed_ms: elapsedMs,
      rate_per_s: events / (elapsedMs / 1000), latency: percentiles(samples, stored),
    };
  });
}

// One RPC step at a fixed offered rate (open loop): --rate calls/s in all, spread over the
// callers in turn whatever the router does, so every server is measured at the same load.
function runRpcFixed(opts, callers, procedure, samples) {
  let calls = 0, answered = 0, stored = 0, stopped = false, lastResultAt = 0, tickTimer = null;
  let finish;
  const finished = new Promise((resolve) => { finish = resolve; });
  for (const caller of callers) {
    caller.sent = new Map();                       // request id -> sent at
    caller.onResult = (m) => {
      const now = performance.now();
      const sentAt = caller.sent.get(m[1]);
      if (sentAt === undefined) return;
      caller.sent.delete(m[1]);
      answered++;
      if (stored < samples.length) samples[stored++] = now - sentAt;
      lastResultAt = now;
      if (stopped && answered === calls) finish();
    };
  }
  const startedAt = performance.now();
  function tick() {
    tickTimer = null;
    if (stopped) return;
    const due = Math.min(opts.maxCount, Math.floor((performance.now() - startedAt) * opts.rate / 1000) + 1);
    while (calls < due) {
      const caller = callers[calls % callers.length];
      const requestId = caller.nextRequest++;
      caller.sent.set(requestId, performance.now());
      calls++;
      caller.send([CALL, requestId, {}, procedure, [calls]]);
    }
    tickTimer = setTimeout(tick, 1);
  }
  const stopTimer = setTimeout(() => {
    stopped = true;
    if (answered === calls) finish();
  }, opts.duration * 1000);
  tick();
  const [drainLimit, cancelDrainLimit] = deadline(opts.duration * 1000 + 10000);
  return Promise.race([finished, drainLimit]).then(() => {
    clearTimeout(stopTimer);
    if (tickTimer) clearTimeout(tickTimer);
    cancelDrainLimit();
    stopped = true;
    const elapsedMs = (lastResultAt || performance.now()) - startedAt;
    return { calls: answered, unanswered: calls - answered, elapsed_ms: elapsedMs,
             offered_per_s: opts.rate, rate_per_s: answered / (elapsedMs / 1000),
             latency: percentiles(samples, stored) };
  });
}

// One measured RPC step: every caller keeps one call in flight (closed loop).
function runRpc(opts, callers, procedure, samples) {
  let calls = 0, stored = 0, stopped = false, lastResultAt = 0, outstanding = 0;
  let finish;
  const finished = new Promise((resolve) => { finish = resolve; });

  function callFrom(caller) {
    if (stopped || calls >= opts.maxCount) {
      if (outstanding === 0) finish();
      return;
    }
    calls++;
    outstanding++;
    caller.sentAt = performance.now();
    caller.send([CALL, caller.nextRequest++, {}, procedure, [calls]]);
  }
  for (const caller of callers) {
    caller.onResult = () => {
      const now = performance.now();
      outstanding--;
      if (stored < samples.length) samples[stored++] = now - caller.sentAt;
      lastResultAt = now;
      callFrom(caller);
    };
  }
  const startedAt = performance.now();
  const stopTimer = setTimeout(() => { stopped = true; if (outstanding === 0) finish(); },
                               opts.duration * 1000);
  for (const caller of callers) callFrom(caller);
  const [drainLimit, cancelDrainLimit] = deadline(opts.duration * 1000 + 10000);
  return Promise.race([finished, drainLimit]).then(() => {
    clearTimeout(stopTimer);
    cancelDrainLimit();
    stopped = true;
    const elapsedMs = (lastResultAt || performance.now()) - startedAt;
    return { calls: calls - outstanding, unanswered: outstanding, elapsed_ms: elapsedMs,
             rate_per_s: (calls - outstanding) / (elapsedMs / 1000),
             latency: percentiles(samples, stored) };
  });
}

// One authenticated handshake and its end: connect, HELLO, CHALLENGE, AUTHENTICATE(token),
// WELCOME, GOODBYE both ways, WebSocket close. Resolves [ms to close, ms to WELCOME].
// One handshake on a plain TCP socket: the HTTP upgrade written and its 101 checked by hand,
// frames through frameReader/clientFrame, then WebSocket close (the router closes TCP).
// Timed from connect to the TCP close, and to WELCOME. `ws` spent as much CPU per handshake
// as the fastest router (key hashing, its HTTP parser and event layers): its latency and its
// pauses were most of what a fixed-rate step measured, for every server alike.
function handshakeOnce(opts, codec, token) {
  const url = new URL(opts.url);
  return new Promise((resolve, reject) => {
    const start = performance.now();
    let welcomeMs = null, failure = null, upgraded = false, closed = false, head = '';
    const socket = net.connect({ host: url.hostname, port: Number(url.port) || 80, noDelay: true });
    const send = (m) => socket.write(clientFrame(codec.encode(m)));
    const closeWith = (error) => {
      failure = failure || error;
      socket.write(clientFrame(Buffer.from([0x03, 0xe8]), 8));     // close, 1000
    };
    const frames = frameReader((opcode, payload) => {
      if (opcode === 8) { closed = true; socket.end(); return false; }
      if (opcode !== 1 && opcode !== 2) return true;
      const m = codec.decode(payload);
      if (m[0] === CHALLENGE) send([AUTHENTICATE, token, {}]);
      else if (m[0] === WELCOME) { welcomeMs = performance.now() - start; send([GOODBYE, {}, 'wamp.close.close_realm']); }
      else if (m[0] === GOODBYE) closeWith(null);
      else if (m[0] === ABORT) closeWith(new Error(String(m[2])));
      return true;
    });
    socket.on('connect', () => {
      socket.write(`GET ${url.pathname} HTTP/1.1\r\nHost: ${url.host}\r\nUpgrade: websocket\r\n`
                   + 'Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n'
                   + `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\n`
                   + `Sec-WebSocket-Protocol: ${codec.protocol}\r\n\r\n`);
    });
    socket.on('data', (chunk) => {
      if (upgraded) { frames(chunk); return; }
      head += chunk.latin1Slice(0, chunk.length);
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) return;
      if (!head.startsWith('HTTP/1.1 101')) {
        failure = new Error(`upgrade refused: ${head.slice(0, head.indexOf('\r\n'))}`);
        socket.destroy();
        return;
      }
      upgraded = true;
      const rest = Buffer.from(head.slice(end + 4), 'latin1');
      send([HELLO, opts.realm, { roles: { caller: {}, subscriber: {} }, authmethods: ['ticket'] }]);
      if (rest.length) frames(rest);
    });
    // Autobahn aborts (RST) a connection once it has answered the client's close.
    socket.on('error', (err) => { if (!closed) failure = failure || err; });
    socket.on('close', () => {
      if (welcomeMs === null || failure) reject(failure || new Error('closed before WELCOME'));
      else resolve([performance.now() - start, welcomeMs]);
    });
  });
}

// Counts one handshake's outcome into tally ({ok, failed, stored, reasons}) and the samples.
function recordHandshake(attempt, tally, samples, welcomeSamples) {
  return attempt.then(([total, welcome]) => {
    if (tally.stored < samples.length) {
      samples[tally.stored] = total;
      welcomeSamples[tally.stored++] = welcome;
    }
    tally.ok++;
  }, (err) => {
    tally.failed++;
    const reason = String(err && err.message).slice(0, 120);
    tally.reasons[reason] = (tally.reasons[reason] || 0) + 1;
  });
}

// The figures of a handshake step from its tally.
function handshakeFigures(tally, elapsedMs, samples, welcomeSamples) {
  return { handshakes: tally.ok, failed: tally.failed, failure_reasons: tally.reasons,
           elapsed_ms: elapsedMs, rate_per_s: tally.ok / (elapsedMs / 1000),
           latency: percentiles(samples, tally.stored),
           latency_to_welcome: percentiles(welcomeSamples, tally.stored) };
}

// One measured handshake step: --concurrency workers in a closed loop. cyclic: tokens in turn
// until the duration is over; otherwise each token once (first-time users), then stop.
function runHandshakes(opts, tokens, cyclic, samples, welcomeSamples, durationS) {
  const codec = CODECS[opts.serializer];
  let next = 0, active = 0, stopped = false, done = false;
  let lastAt = 0;
  const tally = { ok: 0, failed: 0, stored: 0, reasons: {} };
  return new Promise((resolve) => {
    const startedAt = performance.now();
    const stopTimer = setTimeout(() => { stopped = true; if (active === 0) finish(); }, durationS * 1000);
    function finish() {
      if (done) return;
      done = true;
      clearTimeout(stopTimer);
      resolve(handshakeFigures(tally, (lastAt || performance.now()) - startedAt, samples,
                               welcomeSamples));
    }
    function startOne() {
      if (stopped || (!cyclic && next >= tokens.length)) {
        stopped = true;
        if (active === 0) finish();
        return;
      }
      const token = tokens[next++ % tokens.length];
      active++;
      recordHandshake(handshakeOnce(opts, codec, token), tally, samples, welcomeSamples).then(() => {
        active--;
        lastAt = performance.now();
        startOne();
      });
    }
    for (let i = 0; i < Math.max(1, opts.concurrency); i++) startOne();
  });
}

// One handshake step at a fixed offered rate (open loop, existing users in turn): latency at
// the same load for every server. At most 500 in flight; a start that would exceed it is skipped
// and counted.
function runHandshakesFixed(opts, tokens, samples, welcomeSamples) {
  const codec = CODECS[opts.serializer];
  let started = 0, skipped = 0, active = 0, stopped = false;
  let lastAt = 0, tickTimer = null, done = false;
  const tally = { ok: 0, failed: 0, stored: 0, reasons: {} };
  return new Promise((resolve) => {
    const startedAt = performance.now();
    function finish() {
      if (done) return;
      done = true;
      if (tickTimer) clearTimeout(tickTimer);
      resolve({ ...handshakeFigures(tally, (lastAt || performance.now()) - startedAt, samples,
                                    welcomeSamples),
                skipped, offered_per_s: opts.rate });
    }
    function tick() {
      tickTimer = null;
      if (stopped) return;
      const due = Math.floor((performance.now() - startedAt) * opts.rate / 1000) + 1;
      while (started < due) {
        started++;
        if (active >= 500) { skipped++; continue; }
        active++;
        recordHandshake(handshakeOnce(opts, codec, tokens[started % tokens.length]), tally,
                        samples, welcomeSamples).then(() => {
          active--;
          lastAt = performance.now();
          if (stopped && active === 0) finish();
        });
      }
      tickTimer = setTimeout(tick, 1);
    }
    setTimeout(() => { stopped = true; if (active === 0) finish(); }, opts.duration * 1000).unref();
    setTimeout(finish, opts.duration * 1000 + 15000).unref();   // whatever is still in flight then
    tick();
  });
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// Sessions of a scenario and its steps: [{name, run: () => Promise<result>}], warm-up done.
async function prepare(opts, tag) {
  if (opts.scenario === 'fanout') {
    const topic = `bench.fanout.${tag}`;
    const subscribers = await openSessions(opts, opts.subscribers);
    await Promise.all(subscribers.map((s) => s.subscribe(topic)));
    for (const s of subscribers) s.readFramesDirectly();
    const [publisher] = await openSessions(opts, 1);
    const maxPubs = Math.max(1, Math.min(opts.maxCount, Math.floor(MAX_SAMPLES / opts.subscribers)));
    const samples = new Float64Array(maxPubs * opts.subscribers);
    const fanout = (mode, step, o = opts, max = maxPubs) =>
      runFanout(o, mode, subscribers, publisher, topic, samples, max, step);
    // Not measured: the first publications pay for lazy set-up.
    await fanout({ window: opts.window }, 0, { ...opts, duration: 0.3 }, Math.min(maxPubs, 50));
    const steps = [{ name: 'saturation', run: () => fanout({ window: opts.window }, 1) }];
    if (opts.rate > 0) steps.push({ name: 'fixed_rate', run: () => fanout({ rate: opts.rate }, 2) });
    return { sessions: subscribers.concat([publisher]), steps };
  }
  if (opts.scenario === 'handshake') {
    if (!tokenFile) throw new Error('the handshake scenario needs --tokens');
    const existing = tokenFile.existing;
    let tokens = existing, cyclic = true;
    if (opts.tokenSet.startsWith('first:')) {
      tokens = tokenFile.first[Number(opts.tokenSet.slice(6))];
      if (!tokens) throw new Error(`no token block ${opts.tokenSet}`);
      cyclic = false;
    }
    const samples = new Float64Array(Math.min(opts.maxCount, MAX_SAMPLES));
    const welcomeSamples = new Float64Array(samples.length);
    // Not measured: every existing user logs in once (so they exist in the router's database),
    // which also warms up the router's code paths for the first-time step.
    await runHandshakes(opts, existing, false, samples, welcomeSamples, 60);
    const steps = [{ name: 'closed_loop', run: () =>
      runHandshakes(opts, tokens, cyclic, samples, welcomeSamples, opts.duration) }];
    if (opts.rate > 0 && cyclic) {
      steps.push({ name: 'fixed_rate', run: () => runHandshakesFixed(opts, tokens, samples, welcomeSamples) });
    }
    return { sessions: [], steps };
  }
  if (opts.scenario === 'idle') {
    const counts = opts.sessions.split(',').map(Number);
    const sessions = [];
    const steps = counts.map((count) => ({ name: `idle_${count}`, run: async () => {
      const started = performance.now();
      const more = await openSessions(opts, count - sessions.length);
      sessions.push(...more);
      const openMs = performance.now() - started;
      await sleep(opts.settle * 1000);     // let the router finish what logins leave behind
      return { sessions: sessions.length, opened: more.length, open_ms: openMs,
               rate_per_s: more.length / (openMs / 1000) };
    } }));
    return { sessions, steps, abrupt: true };
  }
  if (opts.scenario === 'rpc') {
    const procedure = `bench.echo.${tag}`;
    const [callee] = await openSessions(opts, 1, backendToken(opts));
    callee.onInvocation = (m) => callee.send(m.length > 4 ? [YIELD, m[1], {}, m[4]] : [YIELD, m[1], {}]);
    await callee.register(procedure);
    const callers = await openSessions(opts, opts.callers);
    const samples = new Float64Array(Math.min(opts.maxCount, MAX_SAMPLES));
    await runRpc({ ...opts, duration: 0.3 }, callers, procedure, samples);
    const steps = [{ name: 'closed_loop', run: () => runRpc(opts, callers, procedure, samples) }];
    if (opts.rate > 0) steps.push({ name: 'fixed_rate', run: () => runRpcFixed(opts, callers, procedure, samples) });
    return { sessions: [callee].concat(callers), steps };
  }
  throw new Error(`unknown scenario ${opts.scenario}`);
}

async function main() {
  const opts = parseArgs(process.argv);
  const hardStop = setTimeout(() => {
    emit({ phase: 'error', error: `timeout after ${opts.timeout} s` });
    process.exit(2);
  }, opts.timeout * 1000);
  hardStop.unref();
  const rl = opts.sync ? readline.createInterface({ input: process.stdin }) : null;
  const setupStart = performance.now();
  loadTokens(opts);
  if (!CODECS[opts.serializer]) throw new Error(`unknown serializer ${opts.serializer}`);
  const { sessions, steps, abrupt } = await prepare(opts, `${process.pid}.${Date.now()}`);
  const setupMs = performance.now() - setupStart;
  const results = {};
  for (const step of steps) {
    emit({ phase: 'ready', step: step.name, sessions: sessions.length });
    if (rl) await waitLine(rl);
    const cpuBefore = process.cpuUsage();
    const wallBefore = performance.now();
    const result = await step.run();
    const cpu = process.cpuUsage(cpuBefore);
    const wallS = (performance.now() - wallBefore) / 1000;
    emit({ phase: 'done', step: step.name });
    results[step.name] = { ...result, window_wall_s: wallS, load_cpu_s: (cpu.user + cpu.system) / 1e6 };
  }
  // Idle sessions are dropped, not closed: thousands of closing handshakes would only take
  // time, and the orchestrator restarts the router before it measures memory again.
  if (abrupt) for (const session of sessions) session.ws.terminate();
  else await closeSessions(sessions, opts.connectConcurrency);
  const total = process.cpuUsage();
  emit({
    phase: 'result', scenario: opts.scenario, subscribers: opts.subscribers, callers: opts.callers,
    sessions: sessions.length, setup_ms: setupMs,
    load_cpu_total_s: (total.user + total.system) / 1e6, steps: results,
  });
  if (rl) rl.close();
  clearTimeout(hardStop);
}

main().catch((err) => {
  emit({ phase: 'error', error: String((err && err.stack) || err) });
  process.exit(1);
});
