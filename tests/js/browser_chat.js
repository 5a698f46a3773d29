// The web client in headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core).
//
//   node tests/js/browser_chat.js <base URL> <screenshot dir> <control URL>
//
// alice (desktop size) and bob (phone size) sign in through the realm's login page
// (authorization code + PKCE), chat both ways, alice goes away, bob sends markup that
// must stay text, alice signs out and back in (left/joined, history on arrival), the
// a pasted token connects, the token is renewed in place, the page reconnects by itself after the router drops its
// connection (abort) or says goodbye (system shutdown) via the test's <control URL>, and admin sees chat.admin while alice does not.
// Prints one JSON line per step; exits 1 with the failure (and a screenshot) on error.

'use strict';

const path = require('path');
const { chromium } = require('playwright-core');

const [base, outDir, control] = process.argv.slice(2);
const WAIT = 15000;       // ms: the bound on every wait for the page
const EXECUTABLE = process.env.CHROMIUM || '/usr/bin/chromium';

function step(name, extra) {
  process.stdout.write(JSON.stringify({ step: name, ...(extra || {}) }) + '\n');
}

function watch(page, label, problems) {
  page.on('dialog', (dialog) => {
    problems.push(`${label}: a dialog opened: ${dialog.type()} ${dialog.message()}`);
    dialog.dismiss().catch(() => {});
  });
  page.on('pageerror', (error) => problems.push(`${label}: uncaught error in the page: ${error.message}`));
}

async function signIn(page, username) {
  await page.goto(base + '/');
  await page.waitForSelector('#sign-in:visible', { timeout: WAIT });
  await page.click('#sign-in');
  // The realm's login page (the development issuer here).
  await page.waitForURL((url) => url.pathname.endsWith('/protocol/openid-connect/auth'), { timeout: WAIT });
  const query = new URL(page.url()).searchParams;
  if (query.get('code_challenge_method') !== 'S256' || !query.get('code_challenge') || !query.get('state')) {
    throw new Error('the authorization request lacks PKCE S256 or state: ' + page.url());
  }
  await page.fill('input[name=username]', username);
  await page.fill('input[name=password]', username);
  await page.click('button[type=submit]');
  await page.waitForSelector('#connection[data-state="connected"]', { timeout: WAIT });
  if (page.url().includes('code=')) throw new Error('the code stayed in the address bar: ' + page.url());
  const authid = await page.evaluate(() => window.wampchat.authid);
  await expectMessage(page, 'chat.main', null, `Welcome ${authid}`);
  step('signed in', { username, authid });
  return authid;
}

/** Wait until the topic's list shows text from sender (null: a system message). */
async function expectMessage(page, topic, sender, text) {
  try {
    await page.waitForFunction(([t, s, x]) => [...document.querySelectorAll(`ol.messages[data-topic="${t}"] li`)]
      .some((li) => li.querySelector('.text').textContent === x && (s === null
        ? li.classList.contains('system') && !li.querySelector('.from')
        : !li.classList.contains('system') && li.querySelector('.from').textContent === s)),
    [topic, sender, text], { timeout: WAIT });
  } catch (error) {
    const shown = await page.$$eval(`ol.messages[data-topic="${topic}"] li`, (items) => items.map((li) => li.textContent));
    throw new Error(`${JSON.stringify(text)} from ${sender === null ? 'System' : sender} not shown in ${topic}; `
      + `the page shows ${JSON.stringify(shown)}`);
  }
}

async function expectPresence(page, authid, status) {
  try {
    await page.waitForFunction(([a, s]) => [...document.querySelectorAll('#presence li')].some((li) =>
      li.querySelector('.name').textContent === a && (s === null || li.dataset.status === s)),
    [authid, status], { timeout: WAIT });
  } catch (error) {
    const shown = await page.$$eval('#presence li', (items) => items.map((li) => li.textContent));
    throw new Error(`${authid} (${status}) not in the presence list ${JSON.stringify(shown)}`);
  }
}

async function send(page, text) {
  await page.fill('#message-input', text);
  await page.press('#message-input', 'Enter');
}

/** Make the router end authid's connections; wait until the page shows it reconnecting, then connected. */
async function dropAndReconnect(page, authid, how) {
  const seen = page.waitForFunction(() => window.wampchat.state === 'reconnecting', null,
    { timeout: WAIT, polling: 20 });
  const response = await fetch(`${control}/drop?authid=${encodeURIComponent(authid)}&how=${how}`, { method: 'POST' });
  if (await response.text() === '0') throw new Error(`no session of ${authid} to drop`);
  await seen;
  const shown = await page.textContent('#connection');
  await page.waitForSelector('#connection[data-state="connected"]', { timeout: WAIT });
  return shown;
}

async function main() {
  const browser = await chromium.launch({
    executablePath: EXECUTABLE,
    headless: true,
    args: ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage',
      '--disable-background-networking', '--no-first-run', '--disable-extensions'],
  });
  const problems = [];
  const pages = {};
  try {
    const desktop = await browser.newContext({ viewport: { width: 1100, height: 720 } });
    const phone = await browser.newContext({ viewport: { width: 390, height: 780 }, isMobile: true, hasTouch: true });
    const adminContext = await browser.newContext({ viewport: { width: 1100, height: 720 } });
    pages.alice = await desktop.newPage();
    pages.bob = await phone.newPage();
    pages.admin = await adminContext.newPage();
    for (const [label, page] of Object.entries(pages)) watch(page, label, problems);
    const { alice: a, bob: b } = pages;

    const alice = await signIn(a, 'alice');
    const bob = await signIn(b, 'bob');
    await expectMessage(a, 'chat.main', null, `${bob} has joined the chat.`);
    await expectPresence(a, bob, 'online');
    await expectPresence(b, alice, 'online');
    step('each sees the other');

    await send(a, 'hello from alice');
    await expectMessage(b, 'chat.main', alice, 'hello from alice');
    await expectMessage(a, 'chat.main', alice, 'hello from alice');
    await send(b, 'hi alice, bob here');
    await expectMessage(a, 'chat.main', bob, 'hi alice, bob here');
    step('messages both ways');

    await a.click('.status-buttons button[data-status="away"]');
    await expectMessage(b, 'chat.main', null, `${alice} is now away`);
    await expectPresence(b, alice, 'away');
    await a.waitForSelector('.status-buttons button[data-status="away"][aria-pressed="true"]', { timeout: WAIT });
    step('away shown on the other side');

    const markup = '<img src=x onerror=alert(1)>';
    await send(b, markup);
    await expectMessage(a, 'chat.main', bob, markup);
    await expectMessage(b, 'chat.main', bob, markup);
    for (const page of [a, b]) {
      const images = await page.$$eval('#chat-view img', (found) => found.length);
      if (images !== 0) throw new Error(`markup became ${images} element(s) in the page`);
    }
    step('markup shown as text');

    // Sign out ends the realm login too (end-session endpoint), then back to the page.
    await a.click('#sign-out');
    await a.waitForSelector('#signin-view:visible', { timeout: WAIT });
    await expectMessage(b, 'chat.main', null, `${alice} has left the chat.`);
    await b.waitForFunction((who) => ![...document.querySelectorAll('#presence .name')]
      .some((el) => el.textContent === who), alice, { timeout: WAIT });
    step('signed out: left');

    await signIn(a, 'alice');
    await expectMessage(b, 'chat.main', null, `${alice} has joined the chat.`);
    // History on arrival, senders included.
    await expectMessage(a, 'chat.main', alice, 'hello from alice');
    await expectMessage(a, 'chat.main', bob, 'hi alice, bob here');
    await expectMessage(a, 'chat.main', bob, markup);
    step('signed in again: joined, history shown');

    // Token renewal: refresh_token grant, then wampchat.session.refresh on the open session.
    const renewed = await a.evaluate(() => window.wampchat.refreshNow());
    if (renewed !== true) throw new Error('the token was not renewed: ' + await a.textContent('#session-note'));
    await send(a, 'still here after renewal');
    await expectMessage(b, 'chat.main', alice, 'still here after renewal');
    step('token renewed in place');

    for (const [how, note] of [['lost', 'connection lost'], ['shutdown', 'the server is restarting']]) {
      const shown = await dropAndReconnect(a, alice, how);
      if (!shown.includes(note)) throw new Error(`the connection state said ${JSON.stringify(shown)}`);
      await expectMessage(a, 'chat.main', null, `Welcome ${alice}`);
      await send(a, `back after ${how}`);
      await expectMessage(b, 'chat.main', alice, `back after ${how}`);
      step('reconnected', { how, shown });
    }

    const admin = await signIn(pages.admin, 'admin');
    await pages.admin.waitForSelector('.tab[data-topic="chat.admin"]:visible', { timeout: WAIT });
    await pages.admin.click('.tab[data-topic="chat.admin"]');
    await send(pages.admin, 'for admins only');
    await expectMessage(pages.admin, 'chat.admin', admin, 'for admins only');
    for (const page of [a, b]) {
      if (await page.isVisible('.tab[data-topic="chat.admin"]')) throw new Error('a user sees chat.admin');
    }
    await expectMessage(a, 'chat.main', null, `${admin} has joined the chat.`);
    step('admin sees chat.admin, users do not');

    // A pasted token (here from the password grant) connects too.
    const grant = await fetch(`${base}/realms/wampchat/protocol/openid-connect/token`, {
      method: 'POST', body: new URLSearchParams({ grant_type: 'password', client_id: 'wampchat', username: 'bob', password: 'bob' }),
    });
    const pastedToken = (await grant.json()).access_token;
    pages.pasted = await (await browser.newContext({ viewport: { width: 800, height: 600 } })).newPage();
    watch(pages.pasted, 'pasted', problems);
    await pages.pasted.goto(base + '/');
    await pages.pasted.fill('#token-input', pastedToken);
    await pages.pasted.click('#token-form button[type=submit]');
    await pages.pasted.waitForSelector('#connection[data-state="connected"]', { timeout: WAIT });
    await expectMessage(pages.pasted, 'chat.main', null, `Welcome ${bob}`);
    await expectMessage(pages.pasted, 'chat.main', alice, 'hello from alice');     // history
    step('pasted token connects');

    // Access tokens live 20 s in this test: bob's page renews its own in time, by itself.
    await b.waitForFunction(() => document.getElementById('session-note').textContent.startsWith('Session renewed'),
      null, { timeout: 30000 });
    await send(b, 'bob after the automatic renewal');
    await expectMessage(a, 'chat.main', bob, 'bob after the automatic renewal');
    step('token renewed automatically', { note: await b.textContent('#session-note') });

    if (problems.length) throw new Error(problems.join('\n'));
    for (const [label, page] of Object.entries(pages)) {
      const file = path.join(outDir, `final-${label}.png`);
      await page.screenshot({ path: file, fullPage: true });
      step('screenshot', { file });
    }
  } catch (error) {
    for (const [label, page] of Object.entries(pages)) {
      const file = path.join(outDir, `failure-${label}.png`);
      await page.screenshot({ path: file, fullPage: true }).catch(() => {});
    }
    throw new Error(error.message + (problems.length ? '\nalso: ' + problems.join('\n') : ''));
  } finally {
    await browser.close();
  }
}

main().then(() => process.exit(0), (error) => {
  process.stdout.write(JSON.stringify({ failed: String(error && error.message || error) }) + '\n');
  process.exit(1);
});
