#!/usr/bin/env node
// Load generator of the wampchat bench: raw WAMP v2 JSON over WebSocket (the `ws` package),
// cheap per message (no Autobahn|JS), bounded in count and in time.
//
//   node bench/load.js --url ws://127.0.0.1:8080/ws --scenario fanout --subscribers 100
//   node bench/load.js --url ws://127.0.0.1:8080/ws --scenario rpc --callers 10
//
// Ticket auth when challenged: HELLO with authmethods ["ticket"] and --authid, then
// AUTHENTICATE with the ticket read from the environment variable named by --ticket-env.
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
'use strict';

const { performance } = require('node:perf_hooks');
const readline = require('node:readline');
const WebSocket = require('ws');

const HELLO = 1, WELCOME = 2, ABORT = 3, CHALLENGE = 4, AUTHENTICATE = 5, GOODBYE = 6, ERROR = 8;
const PUBLISH = 16, SUBSCRIBE = 32, SUBSCRIBED = 33, EVENT = 36;
const CALL = 48, RESULT = 50, REGISTER = 64, REGISTERED = 65, INVOCATION = 68, YIELD = 70;

const MAX_SAMPLES = 4000000;          // latency samples kept per run (32 MB of float64)

function parseArgs(argv) {
  const opts = {
    url: 'ws://127.0.0.1:8080/ws', realm: 'bench', authid: 'bench', ticketEnv: 'BENCH_TICKET',
    scenario: 'fanout', subscribers: 100, callers: 1, duration: 5, window: 4, rate: 0,
    maxCount: 1000000, connectConcurrency: 50, timeout: 120, sync: true, payload: 0,
  };
  const names = {
    '--url': 'url', '--realm': 'realm', '--authid': 'authid', '--ticket-env': 'ticketEnv',
    '--scenario': 'scenario', '--subscribers': 'subscribers', '--callers': 'callers',
    '--duration': 'duration', '--window': 'window', '--rate': 'rate', '--max-count': 'maxCount',
    '--connect-concurrency': 'connectConcurrency', '--timeout': 'timeout', '--payload': 'payload',
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
  constructor(opts) {
    this.opts = opts;
    this.nextRequest = 1;
    this.pending = new Map();          // request id -> {resolve, reject}
    this.onEvent = null;               // (message) => void
    this.onInvocation = null;          // (message) => void
    this.onResult = null;              // (message) => void, RESULTs of calls made with callRaw
    this.closed = null;
  }

  connect() {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.opts.url, ['wamp.2.json'], { perMessageDeflate: false });
      this.ws = ws;
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
          authmethods: ['ticket'], authid: this.opts.authid,
        }]);
      });
      ws.on('message', (data) => {
        const message = JSON.parse(data);
        switch (message[0]) {
          case EVENT: this.onEvent(message); return;
          case RESULT: this.onResult(message); return;
          case INVOCATION: this.onInvocation(message); return;
          case CHALLENGE:
            this.send([AUTHENTICATE, process.env[this.opts.ticketEnv] || '', {}]); return;
          case WELCOME: this.id = message[1]; resolve(this); return;
          case ABORT: reject(new Error(`ABORT ${message[2]} ${JSON.stringify(message[1])}`)); return;
          case SUBSCRIBED: case REGISTERED: this.settle(message[1], message); return;
          case ERROR: this.settle(message[2], null, new Error(`ERROR ${message[4]}`)); return;
          case GOODBYE:
            if (!this.saidGoodbye) this.send([GOODBYE, {}, 'wamp.close.goodbye_and_out']);
            ws.close(1000); return;
          default: return;
        }
      });
    });
  }

  send(message) {
    this.ws.send(JSON.stringify(message));
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

async function openSessions(opts, count) {
  const sessions = new Array(count);
  let next = 0;
  async function worker() {
    while (next < count) {
      const index = next++;
      sessions[index] = await new Session(opts).connect();
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

// Sessions of a scenario and its steps: [{name, run: () => Promise<result>}], warm-up done.
async function prepare(opts, tag) {
  if (opts.scenario === 'fanout') {
    const topic = `bench.fanout.${tag}`;
    const subscribers = await openSessions(opts, opts.subscribers);
    await Promise.all(subscribers.map((s) => s.subscribe(topic)));
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
  if (opts.scenario === 'rpc') {
    const procedure = `bench.echo.${tag}`;
    const [callee] = await openSessions(opts, 1);
    callee.onInvocation = (m) => callee.send(m.length > 4 ? [YIELD, m[1], {}, m[4]] : [YIELD, m[1], {}]);
    await callee.register(procedure);
    const callers = await openSessions(opts, opts.callers);
    const samples = new Float64Array(Math.min(opts.maxCount, MAX_SAMPLES));
    await runRpc({ ...opts, duration: 0.3 }, callers, procedure, samples);
    return { sessions: [callee].concat(callers),
             steps: [{ name: 'closed_loop', run: () => runRpc(opts, callers, procedure, samples) }] };
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
  const { sessions, steps } = await prepare(opts, `${process.pid}.${Date.now()}`);
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
  await closeSessions(sessions, opts.connectConcurrency);
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
