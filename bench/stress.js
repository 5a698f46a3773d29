#!/usr/bin/env node
// Stress load of bench/stress.py: raw WAMP v2 JSON over WebSocket (`ws`), bounded in count
// and time. Every stdout line is one JSON object.
//
//   hold   --steps 1000,5000,10000 --token-env T
//          open ticket sessions up to each step (from 200 loopback addresses); at each prints {"phase":"held",...} and
//          waits for a line on stdin (the orchestrator reads the router's RSS); then GOODBYE.
//   flood  --connections 2000 --duration 20
//          that many connections at once, each looping: WebSocket open, HELLO, AUTHENTICATE
//          with a forged token (ABORT expected), close; prints attempts and outcomes.
//   probe  --duration 20 --interval 500 --token-env T [--from 127.0.0.2]
//          a legitimate user every interval: open, log in, call rpc.activity.list, close;
//          prints the latency of each whole round (p50/p99/max) and failures.
//   slow   --duration 30 --token-env T (a backend token)
//          one subscriber that stops reading, one that reads, one publisher sending 1 KiB
//          events as fast as the socket drains; prints what the reading subscriber got.
'use strict';

const { performance } = require('node:perf_hooks');
const readline = require('node:readline');
const WebSocket = require('ws');

const HELLO = 1, WELCOME = 2, ABORT = 3, CHALLENGE = 4, AUTHENTICATE = 5, GOODBYE = 6, ERROR = 8;
const PUBLISH = 16, SUBSCRIBE = 32, SUBSCRIBED = 33, EVENT = 36, CALL = 48, RESULT = 50;

function parseArgs(argv) {
  const opts = { url: 'ws://127.0.0.1:8080/ws', realm: 'wampchat', scenario: 'hold',
    steps: '1000', connections: 2000, duration: 20, interval: 500, tokenEnv: 'STRESS_TOKEN',
    concurrency: 200, topic: 'stress.flood', from: '127.0.0.1' };
  const names = { '--url': 'url', '--realm': 'realm', '--scenario': 'scenario', '--steps': 'steps',
    '--connections': 'connections', '--duration': 'duration', '--interval': 'interval',
    '--token-env': 'tokenEnv', '--concurrency': 'concurrency', '--topic': 'topic',
    '--from': 'from' };
  for (let i = 2; i < argv.length; i += 2) {
    const key = names[argv[i]];
    if (!key || i + 1 >= argv.length) throw new Error(`unknown or incomplete option ${argv[i]}`);
    opts[key] = typeof opts[key] === 'number' ? Number(argv[i + 1]) : argv[i + 1];
  }
  return opts;
}

const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// One WAMP session: ticket login with `token`; resolves with {ws, id, ...} at WELCOME.
function login(opts, token, onMessage, localAddress) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(opts.url, ['wamp.2.json'],
      { perMessageDeflate: false, localAddress: localAddress || opts.from });
    let welcomed = false;
    const timer = setTimeout(() => { ws.terminate(); reject(new Error('login timeout')); }, 30000);
    ws.on('error', (err) => { clearTimeout(timer); reject(err); });
    ws.on('close', () => { clearTimeout(timer); if (!welcomed) reject(new Error('closed before WELCOME')); });
    ws.on('open', () => ws.send(JSON.stringify([HELLO, opts.realm, {
      roles: { publisher: {}, subscriber: {}, caller: {}, callee: {} }, authmethods: ['ticket'] }])));
    ws.on('message', (data) => {
      const msg = JSON.parse(data);
      if (msg[0] === CHALLENGE) ws.send(JSON.stringify([AUTHENTICATE, token, {}]));
      else if (msg[0] === WELCOME) { welcomed = true; clearTimeout(timer); resolve({ ws, id: msg[1] }); }
      else if (msg[0] === ABORT) { clearTimeout(timer); ws.close(); reject(new Error(`ABORT ${msg[2]}`)); }
      else if (msg[0] === GOODBYE) { ws.send(JSON.stringify([GOODBYE, {}, 'wamp.close.goodbye_and_out'])); ws.close(); }
      else if (onMessage) onMessage(msg);
    });
  });
}

function goodbye(session) {
  if (session.ws.readyState === WebSocket.OPEN) {
    session.ws.send(JSON.stringify([GOODBYE, {}, 'wamp.close.close_realm']));
    setTimeout(() => session.ws.terminate(), 500).unref();
  }
}

function percentiles(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const at = (p) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)] : null);
  return { count: sorted.length, p50_ms: at(0.5), p99_ms: at(0.99), max_ms: at(1) };
}

async function hold(opts) {
  const token = process.env[opts.tokenEnv];
  const rl = readline.createInterface({ input: process.stdin });
  const lines = [];
  const waiting = [];
  rl.on('line', (line) => (waiting.length ? waiting.shift()(line) : lines.push(line)));
  const nextLine = () => new Promise((resolve) => (lines.length ? resolve(lines.shift()) : waiting.push(resolve)));
  const sessions = [];
  for (const step of opts.steps.split(',').map(Number)) {
    const started = performance.now();
    let failures = 0;
    const target = step;
    async function worker() {
      while (sessions.length < target) {
        sessions.push(null);                      // reserve the slot
        const index = sessions.length - 1;
        // Spread over 127.0.0.10-209 (all loopback), as many clients would come from
        // many addresses: the shipped per-address limit stays in force.
        try { sessions[index] = await login(opts, token, null, `127.0.0.${10 + (index % 200)}`); } catch (err) { failures++; sessions.pop(); if (failures > 50) throw err; }
      }
    }
    await Promise.all(Array.from({ length: opts.concurrency }, worker));
    const seconds = (performance.now() - started) / 1000;
    emit({ phase: 'held', sessions: sessions.filter(Boolean).length, seconds, failures });
    await nextLine();
  }
  for (const session of sessions) if (session) goodbye(session);
  await sleep(700);
  emit({ phase: 'result', scenario: 'hold' });
  process.exit(0);
}

async function flood(opts) {
  const forged = 'eyJhbGciOiJSUzI1NiIsImtpZCI6ImZvcmdlZCJ9.eyJzdWIiOiJ4In0.c2ln';
  const endAt = performance.now() + opts.duration * 1000;
  const outcomes = { abort: 0, error: 0, welcome: 0 };
  let attempts = 0;
  async function loop() {
    while (performance.now() < endAt) {
      attempts++;
      try { goodbye(await login(opts, forged)); outcomes.welcome++; } catch (err) {
        if (String(err.message).startsWith('ABORT')) outcomes.abort++; else outcomes.error++;
        if (!String(err.message).startsWith('ABORT')) await sleep(50);   // refused: back off a bit
      }
    }
  }
  await Promise.all(Array.from({ length: opts.connections }, loop));
  emit({ phase: 'result', scenario: 'flood', connections: opts.connections, attempts,
    per_second: attempts / opts.duration, ...outcomes });
  process.exit(0);
}

async function probe(opts) {
  const token = process.env[opts.tokenEnv];
  const endAt = performance.now() + opts.duration * 1000;
  const latencies = [];
  const failures = [];
  while (performance.now() < endAt) {
    const started = performance.now();
    try {
      const session = await login(opts, token, (msg) => {
        if (msg[0] === RESULT || msg[0] === ERROR) session.done(msg);
      });
      await new Promise((resolve) => {
        session.done = resolve;
        session.ws.send(JSON.stringify([CALL, 1, {}, 'rpc.activity.list']));
      });
      latencies.push(performance.now() - started);
      goodbye(session);
    } catch (err) {
      failures.push(String(err.message));
    }
    await sleep(Math.max(0, opts.interval - (performance.now() - started)));
  }
  emit({ phase: 'result', scenario: 'probe', ...percentiles(latencies), failures,
    samples_ms: latencies.map((ms) => Math.round(ms)) });
  process.exit(0);
}

async function slow(opts) {
  const token = process.env[opts.tokenEnv];
  let received = 0;
  let stalledClosed = false;
  const subscribe = (session) => new Promise((resolve) => {
    session.ws.on('message', (data) => { if (JSON.parse(data)[0] === SUBSCRIBED) resolve(); });
    session.ws.send(JSON.stringify([SUBSCRIBE, 1, {}, opts.topic]));
  });
  const stalled = await login(opts, token);
  const reader = await login(opts, token, (msg) => { if (msg[0] === EVENT) received++; });
  await subscribe(stalled);
  await subscribe(reader);
  stalled.ws.on('close', () => { stalledClosed = true; });
  stalled.ws._socket.pause();                       // stops reading: the router's buffer fills
  const publisher = await login(opts, token);
  const payload = 'x'.repeat(1024);
  const endAt = performance.now() + opts.duration * 1000;
  let published = 0;
  while (performance.now() < endAt) {
    for (let i = 0; i < 50; i++) {
      publisher.ws.send(JSON.stringify([PUBLISH, ++published, {}, opts.topic, [payload]]));
    }
    // follow the socket: never more than 1 MiB queued in this process
    while (publisher.ws.bufferedAmount > 1 << 20) await sleep(1);
    await sleep(0);
  }
  await sleep(1000);
  stalled.ws._socket.resume();
  await sleep(500);
  emit({ phase: 'result', scenario: 'slow', seconds: opts.duration, published, received,
    received_per_second: received / opts.duration, stalled_closed: stalledClosed });
  goodbye(reader); goodbye(publisher);
  await sleep(600);
  process.exit(0);
}

const SCENARIOS = { hold, flood, probe, slow };
const opts = parseArgs(process.argv);
SCENARIOS[opts.scenario](opts).catch((err) => { emit({ phase: 'error', error: String(err && err.stack || err) }); process.exit(2); });
