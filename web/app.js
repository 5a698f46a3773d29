// The wampchat web client: sign in, connect with ticket auth, chat, status and presence.
// Every piece of text that comes from the network is put on the page with textContent.

import {
  claimsOf, completeSignIn, endSessionUrl, isCallback, loadTokens, pastedTokens, refreshTokens,
  saveTokens, startSignIn,
} from './oidc.js';

const MAIN = 'chat.main';
const ADMIN = 'chat.admin';
const ON_STATUS = 'activity.on_status';
const HISTORY_PAGE = 50;
const REFRESH_MARGIN = 60 * 1000;     // ms before expiry when the token is renewed ...
const MIN_REFRESH_IN = 5 * 1000;      // ... but not sooner than this from now
// Router closes after which the user must sign in again (no automatic reconnect).
const SIGNED_OUT_REASONS = new Set(['wampchat.close.logged_out', 'wamp.close.killed']);
const AUTH_REFUSED = new Set(['wamp.error.authentication_failed', 'wamp.error.not_authorized',
  'wamp.error.no_auth_method', 'wamp.error.authorization_failed']);

// How a router close reads in the connection state.
const CLOSE_TEXT = {
  'wamp.close.system_shutdown': 'the server is restarting',
  'wampchat.close.token_expired': 'the token expired',
  'wampchat.close.slow_consumer': 'too slow to keep up',
  'wampchat.close.timeout': 'timed out',
  'wampchat.error.unavailable': 'sign-in is unavailable for now',
};

const $ = (id) => document.getElementById(id);

const app = {
  config: null,
  tokens: null,
  connection: null,
  session: null,
  details: null,           // WELCOME details of the current session
  closing: false,          // we closed it: no reconnect
  refreshTimer: null,
  refreshing: null,        // the renewal in flight (a Promise), if any
  reconnectTimer: null,
  reconnectDelay: 1,
  activeTopic: MAIN,
  presence: new Map(),     // authid -> status
  presenceTimer: null,
  lastRefresh: null,
};

// -- small DOM helpers --------------------------------------------------------------------

function show(element, visible) {
  element.hidden = !visible;
}

function setConnection(state, text) {
  const pill = $('connection');
  pill.dataset.state = state;
  pill.textContent = text;
}

function showError(element, text) {
  element.textContent = text || '';
  show(element, Boolean(text));
}

function timeText(seconds) {
  const date = seconds ? new Date(seconds * 1000) : new Date();
  return date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

function listFor(topic) {
  return document.querySelector(`ol.messages[data-topic="${topic}"]`);
}

/** One message line. sender null: a system message. */
function addMessage(topic, sender, text, seconds) {
  const list = listFor(topic);
  if (!list) return;
  const item = document.createElement('li');
  item.className = sender === null ? 'msg system' : 'msg';
  const time = document.createElement('time');
  time.textContent = timeText(seconds);
  item.append(time);
  if (sender !== null) {
    const who = document.createElement('span');
    who.className = 'from';
    who.textContent = sender;
    if (app.details && sender === app.details.authid) item.classList.add('mine');
    item.append(who);
  }
  const body = document.createElement('span');
  body.className = 'text';
  body.textContent = text;
  item.append(body);
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.append(item);
  if (atBottom || sender === null || item.classList.contains('mine')) list.scrollTop = list.scrollHeight;
}

// -- views ----------------------------------------------------------------------------------

function showSignIn(message) {
  show($('chat-view'), false);
  show($('signin-view'), true);
  show($('sign-out'), false);
  show($('who'), false);
  showError($('signin-error'), message);
  const oidc = app.config && app.config.keycloak;
  show($('oidc-signin'), Boolean(oidc));
  if (oidc) $('realm-name').textContent = oidc.realm;
  setConnection('idle', 'not connected');
}

function showChat() {
  show($('signin-view'), false);
  show($('chat-view'), true);
  show($('sign-out'), true);
}

function selectTopic(topic) {
  app.activeTopic = topic;
  for (const tab of document.querySelectorAll('.tab')) {
    tab.setAttribute('aria-selected', String(tab.dataset.topic === topic));
  }
  for (const list of document.querySelectorAll('ol.messages')) show(list, list.dataset.topic === topic);
  $('message-input').placeholder = 'Message ' + topic;
  $('message-input').focus();
}

function renderPresence() {
  const list = $('presence');
  list.replaceChildren();
  for (const [authid, status] of [...app.presence.entries()].sort()) {
    const item = document.createElement('li');
    item.dataset.status = status;
    const dot = document.createElement('span');
    dot.className = 'dot';
    dot.setAttribute('aria-hidden', 'true');
    const name = document.createElement('span');
    name.className = 'name';
    name.textContent = authid;
    name.title = authid;            // the full name when it is cut short
    const label = document.createElement('span');
    label.className = 'status';
    label.textContent = status;
    item.append(dot, name, label);
    list.append(item);
  }
}

function showOwnStatus(status) {
  for (const button of document.querySelectorAll('[data-status]')) {
    if (button.tagName === 'BUTTON') button.setAttribute('aria-pressed', String(button.dataset.status === status));
  }
}

// -- tokens ---------------------------------------------------------------------------------

function scheduleRefresh() {
  clearTimeout(app.refreshTimer);
  app.refreshTimer = null;
  const tokens = app.tokens;
  if (!tokens || !tokens.refresh_token || !tokens.expires_at) return;
  const lifetime = tokens.expires_at - tokens.issued_at;
  // Renew a minute before expiry, or half-way through a short lifetime.
  const margin = Math.min(REFRESH_MARGIN, lifetime / 2);
  const delay = Math.max(MIN_REFRESH_IN, tokens.expires_at - margin - Date.now());
  app.refreshTimer = setTimeout(() => refreshNow().catch(() => {}), delay);
}

/** Renew the token at the realm, then the open session's credentials at the router.
 *  One renewal at a time: the realm may rotate refresh tokens, so a second request
 *  with the same one would be refused. */
function refreshNow() {
  if (!app.refreshing) {
    app.refreshing = renew().finally(() => { app.refreshing = null; });
  }
  return app.refreshing;
}

async function renew() {
  const oidc = app.config.keycloak;
  const before = app.tokens;
  if (!before || !before.refresh_token || !oidc) return false;
  let renewed;
  try {
    renewed = await refreshTokens(oidc, before);
  } catch (error) {
    if (app.tokens !== before) return false;       // signed out meanwhile
    if (error.retryable) {
      // The realm is unreachable for now: try again soon; the token may still be valid.
      clearTimeout(app.refreshTimer);
      app.refreshTimer = setTimeout(() => refreshNow().catch(() => {}), 10 * 1000);
      return false;
    }
    signOutLocally('Your sign-in has ended (' + error.message + '). Please sign in again.');
    return false;
  }
  if (app.tokens !== before) return false;         // signed out (or in again) meanwhile
  app.tokens = renewed;
  saveTokens(app.tokens);
  scheduleRefresh();
  if (app.session && app.session.isOpen) {
    try {
      await app.session.call('wampchat.session.refresh', [app.tokens.access_token]);
    } catch (error) {
      $('session-note').textContent = 'session renewal refused: ' + errorText(error);
      return false;
    }
  }
  app.lastRefresh = new Date();
  $('session-note').textContent = 'Session renewed at ' + app.lastRefresh.toLocaleTimeString();
  return true;
}

/** A token for (re)connecting: refreshed first when it is about to expire. */
async function currentToken() {
  const tokens = app.tokens;
  if (tokens && tokens.refresh_token && tokens.expires_at && tokens.expires_at - Date.now() < 15 * 1000) {
    await refreshNow();
  }
  return app.tokens ? app.tokens.access_token : '';
}

function errorText(error) {
  if (error && error.error) {
    const message = error.args && error.args.length ? String(error.args[0]) : '';
    return message ? `${message} (${error.error})` : error.error;
  }
  return String(error && error.message ? error.message : error);
}

// -- the WAMP connection ---------------------------------------------------------------------

function wsUrl() {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return scheme + '//' + location.host + app.config.ws_path;
}

function connect() {
  clearTimeout(app.reconnectTimer);
  app.closing = false;
  showChat();
  setConnection('connecting', 'connecting…');
  const connection = new autobahn.Connection({
    url: wsUrl(),
    realm: app.config.realm,
    authmethods: ['ticket'],
    onchallenge: async (session, method) => {
      if (method !== 'ticket') throw new Error('unexpected authmethod ' + method);
      return currentToken();
    },
    max_retries: -1,               // a lost connection is retried for ever ...
    initial_retry_delay: 1,
    max_retry_delay: 15,
    retry_delay_growth: 1.5,
  });
  connection.onopen = (session, details) => {
    if (connection !== app.connection) return;
    onOpen(session, details).catch((error) => showError($('chat-error'), errorText(error)));
  };
  connection.onclose = (reason, details) => onClose(connection, reason, details);
  app.connection = connection;
  connection.open();
}

function onClose(connection, reason, details) {
  if (connection !== app.connection) return true;
  app.session = null;
  if (app.closing) return true;
  const why = details && details.reason;
  if (why && SIGNED_OUT_REASONS.has(why)) {
    signOutLocally('You were signed out by the server (' + why + ').');
    return true;
  }
  if (details && details.will_retry) {
    setConnection('reconnecting', `connection ${reason}: reconnecting in ${Math.ceil(details.retry_delay)} s…`);
    return false;
  }
  // The router ended the session (GOODBYE) or refused it (ABORT): Autobahn does not
  // retry those, so we do, after a refresh when the token may be the reason.
  if (why && AUTH_REFUSED.has(why)) {
    if (!app.tokens || !app.tokens.refresh_token || app.authRetried) {
      signOutLocally('The server refused your token: ' + (details.message || why));
      return true;
    }
    app.authRetried = true;
    // Renewed, or still the old token when the realm is unreachable (refused again:
    // back to the sign-in screen); a refused renewal has signed out already.
    refreshNow().then(() => { if (app.tokens) connect(); });
    setConnection('reconnecting', 'renewing the token…');
    return true;
  }
  const delay = app.reconnectDelay;
  app.reconnectDelay = Math.min(app.reconnectDelay * 2, 15);
  setConnection('reconnecting', `${CLOSE_TEXT[why] || why || reason}: reconnecting in ${delay} s…`);
  app.reconnectTimer = setTimeout(() => {
    const expired = app.tokens && app.tokens.expires_at && app.tokens.expires_at < Date.now();
    if (expired && !app.tokens.refresh_token) {
      signOutLocally('Your token has expired. Please sign in again.');
      return;
    }
    connect();
  }, delay * 1000);
  return true;
}

async function onOpen(session, details) {
  app.session = session;
  app.details = details;
  app.reconnectDelay = 1;
  app.authRetried = false;
  setConnection('connected', 'connected');
  showError($('chat-error'), '');
  const who = $('who');
  who.textContent = details.authid + (details.authrole === 'admin' ? ' (admin)' : '');
  show(who, true);
  const admin = details.authrole === 'admin';
  show(document.querySelector('.tab[data-topic="chat.admin"]'), admin);
  if (!admin && app.activeTopic === ADMIN) selectTopic(MAIN);

  const topics = admin ? [MAIN, ADMIN] : [MAIN];
  for (const list of document.querySelectorAll('ol.messages')) list.replaceChildren();
  await Promise.all(topics.map((topic) => joinTopic(session, topic)));
  await session.subscribe(ON_STATUS, (args, kwargs) => onStatus(kwargs || {}));
  await loadPresence(session);
  const own = app.presence.get(details.authid);
  showOwnStatus(own || 'online');
}

/** Subscribe (the welcome comes on subscribing), then show the history before what arrived. */
async function joinTopic(session, topic) {
  const early = [];
  let live = false;
  const deliver = (args, kwargs, details) => {
    const event = { kwargs: kwargs || {}, details: details || {} };
    if (live) onChatEvent(topic, event); else early.push(event);
  };
  await session.subscribe(topic, deliver);
  let history = [];
  try {
    history = await session.call('chat.history', [topic, HISTORY_PAGE]);
  } catch (error) {
    addMessage(topic, null, 'History is not available: ' + errorText(error));
  }
  const seen = new Set();
  for (const entry of Array.isArray(history) ? history : []) {
    if (typeof entry.message !== 'string') continue;
    addMessage(topic, String(entry.from), entry.message, entry.time);
    seen.add(String(entry.from) + '\u0000' + entry.message);
  }
  for (const event of early) {
    // A message published while the history was read is in both: show it once.
    const key = event.details.publisher_authid + '\u0000' + event.kwargs.message;
    if (event.details.publisher_authrole !== 'backend' && seen.delete(key)) continue;
    onChatEvent(topic, event);
  }
  live = true;
}

function onChatEvent(topic, { kwargs, details }) {
  const text = kwargs.message;
  if (typeof text !== 'string') return;
  // The sender is what the router disclosed, never the payload's "from".
  if (details.publisher_authrole === 'backend') {
    addMessage(topic, null, text);
    if (topic === MAIN) refreshPresenceSoon();      // joins and leaves change who is present
  } else {
    addMessage(topic, details.publisher_authid || 'unknown', text);
  }
}

async function loadPresence(session) {
  const users = await session.call('rpc.activity.list');
  app.presence = new Map((Array.isArray(users) ? users : []).map((u) => [String(u.authid), String(u.status)]));
  renderPresence();
}

function refreshPresenceSoon() {
  clearTimeout(app.presenceTimer);
  app.presenceTimer = setTimeout(() => {
    if (app.session && app.session.isOpen) loadPresence(app.session).catch(() => {});
  }, 150);
}

function onStatus({ authid, status }) {
  if (typeof authid !== 'string' || typeof status !== 'string') return;
  if (status === 'offline') app.presence.delete(authid);
  else app.presence.set(authid, status);
  renderPresence();
  if (app.details && authid === app.details.authid && status !== 'offline') showOwnStatus(status);
}

// -- user actions ------------------------------------------------------------------------------

async function send(event) {
  event.preventDefault();
  const input = $('message-input');
  const text = input.value;
  if (!text.trim() || !app.session || !app.session.isOpen) return;
  try {
    await app.session.publish(app.activeTopic, [], { message: text },
      { acknowledge: true, exclude_me: false });
    input.value = '';
    showError($('chat-error'), '');
  } catch (error) {
    showError($('chat-error'), 'Not sent: ' + errorText(error));
  }
}

async function setStatus(status) {
  if (!app.session || !app.session.isOpen) return;
  try {
    await app.session.call('rpc.activity.set_status', [status]);
    showOwnStatus(status);
  } catch (error) {
    showError($('chat-error'), 'Status not changed: ' + errorText(error));
  }
}

function closeConnection() {
  app.closing = true;
  clearTimeout(app.reconnectTimer);
  clearTimeout(app.refreshTimer);
  const connection = app.connection;
  app.connection = null;
  app.session = null;
  if (connection) {
    try { connection.close('wamp.close.normal', 'signed out'); } catch (e) { /* already closed */ }
  }
}

function signOutLocally(message) {
  closeConnection();
  app.tokens = null;
  saveTokens(null);
  app.presence.clear();
  renderPresence();
  showSignIn(message);
}

function signOut() {
  const url = endSessionUrl(app.config.keycloak, app.tokens);
  signOutLocally('');
  // Also end the realm login, so the next sign-in asks for the password again.
  if (url) location.assign(url);
}

function useTokens(tokens) {
  app.tokens = tokens;
  saveTokens(tokens);
  scheduleRefresh();
  connect();
}

// -- start -------------------------------------------------------------------------------------

async function start() {
  $('sign-in').addEventListener('click', () => {
    startSignIn(app.config.keycloak).catch((error) => showError($('signin-error'), error.message));
  });
  $('token-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const token = $('token-input').value.trim();
    if (!token) return;
    const tokens = pastedTokens(token);
    if (!claimsOf(token)) {
      showError($('signin-error'), 'That does not look like a JWT access token.');
      return;
    }
    $('token-input').value = '';
    useTokens(tokens);
  });
  $('composer').addEventListener('submit', send);
  $('sign-out').addEventListener('click', signOut);
  for (const button of document.querySelectorAll('.status-buttons button')) {
    button.addEventListener('click', () => setStatus(button.dataset.status));
  }
  for (const tab of document.querySelectorAll('.tab')) {
    tab.addEventListener('click', () => selectTopic(tab.dataset.topic));
  }

  if (typeof autobahn === 'undefined') {
    showSignIn('Autobahn|JS did not load (/vendor/autobahn.min.js): run `npm install` on the server.');
    return;
  }
  try {
    const response = await fetch('config.json', { cache: 'no-store' });
    app.config = await response.json();
  } catch (error) {
    showSignIn('The client configuration (/config.json) could not be loaded.');
    return;
  }
  if (isCallback()) {
    if (!app.config.keycloak) {
      history.replaceState(null, '', location.pathname);
      showSignIn('Sign-in through a realm is not configured on this server.');
      return;
    }
    try {
      useTokens(await completeSignIn(app.config.keycloak));
    } catch (error) {
      showSignIn('Sign-in failed: ' + error.message);
    }
    return;
  }
  const stored = loadTokens();
  if (stored && stored.access_token && (stored.refresh_token || !stored.expires_at || stored.expires_at > Date.now())) {
    useTokens(stored);
  } else {
    saveTokens(null);
    showSignIn('');
  }
}

// A small handle for the browser test and for debugging: no tokens are exposed.
window.wampchat = {
  refreshNow,
  get state() { return $('connection').dataset.state; },
  get authid() { return app.details ? app.details.authid : null; },
};

start();
