// OpenID Connect for a public client: authorization code + PKCE (S256), refresh_token
// grant, end-session URL. Works against Keycloak and wampchat's development issuer,
// whose endpoints come from /config.json. Tokens live in sessionStorage (this tab only).

const FLOW_KEY = 'wampchat.oidc.flow';     // verifier + state while the browser is at the login page
const TOKENS_KEY = 'wampchat.tokens';

function base64url(bytes) {
  let text = '';
  for (const byte of bytes) text += String.fromCharCode(byte);
  return btoa(text).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

function randomString(size = 32) {
  return base64url(crypto.getRandomValues(new Uint8Array(size)));
}

async function s256(verifier) {
  if (!crypto.subtle) {
    // WebCrypto exists only in secure contexts: https, or http on localhost/127.0.0.1.
    throw new Error('signing in needs https (or localhost); paste a token instead');
  }
  const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(verifier));
  return base64url(new Uint8Array(digest));
}

/** This page without query or fragment: the redirect URI registered at the realm. */
export function redirectUri() {
  return location.origin + location.pathname;
}

/** Claims of a JWT, unverified (for display and expiry only; the router verifies). */
export function claimsOf(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const json = decodeURIComponent(Array.from(atob(part),
      (c) => '%' + c.charCodeAt(0).toString(16).padStart(2, '0')).join(''));
    return JSON.parse(json);
  } catch (e) {
    return null;
  }
}

export function loadTokens() {
  try {
    return JSON.parse(sessionStorage.getItem(TOKENS_KEY)) || null;
  } catch (e) {
    return null;
  }
}

export function saveTokens(tokens) {
  if (tokens) sessionStorage.setItem(TOKENS_KEY, JSON.stringify(tokens));
  else sessionStorage.removeItem(TOKENS_KEY);
}

/** A token set from a token endpoint answer; expiry on our clock (no clock skew issue). */
function fromAnswer(answer, previous) {
  const now = Date.now();
  return {
    source: 'oidc',
    access_token: answer.access_token,
    refresh_token: answer.refresh_token || (previous && previous.refresh_token) || null,
    id_token: answer.id_token || (previous && previous.id_token) || null,
    issued_at: now,
    expires_at: now + (Number(answer.expires_in) || 60) * 1000,
  };
}

/** A pasted access token: no refresh; expiry from its exp claim when it has one. */
export function pastedTokens(token) {
  const claims = claimsOf(token);
  const now = Date.now();
  return {
    source: 'pasted', access_token: token, refresh_token: null, id_token: null, issued_at: now,
    expires_at: claims && claims.exp ? claims.exp * 1000 : null,
  };
}

/** Go to the realm's login page. */
export async function startSignIn(oidc) {
  const verifier = randomString(48);
  const state = randomString(16);
  const nonce = randomString(16);
  const challenge = await s256(verifier);
  sessionStorage.setItem(FLOW_KEY, JSON.stringify({ verifier, state, nonce, redirect_uri: redirectUri() }));
  const query = new URLSearchParams({
    client_id: oidc.client_id, redirect_uri: redirectUri(), response_type: 'code',
    scope: 'openid', state, nonce, code_challenge: challenge, code_challenge_method: 'S256',
  });
  location.assign(oidc.authorization_endpoint + '?' + query.toString());
}

/** True when this page load is the realm sending the browser back (code or error in the query). */
export function isCallback() {
  const params = new URLSearchParams(location.search);
  return params.has('code') || params.has('error');
}

class SignInError extends Error {}

async function tokenRequest(oidc, fields) {
  let response;
  try {
    response = await fetch(oidc.token_endpoint, {
      method: 'POST', cache: 'no-store', credentials: 'omit',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ client_id: oidc.client_id, ...fields }).toString(),
    });
  } catch (e) {
    // No answer at all (network, or CORS: the realm client needs this page's origin in Web Origins).
    const error = new Error('the token endpoint did not answer (network or CORS)');
    error.retryable = true;
    throw error;
  }
  let body = {};
  try { body = await response.json(); } catch (e) { /* not JSON */ }
  if (!response.ok) {
    const error = new SignInError(body.error_description || body.error || `HTTP ${response.status}`);
    error.retryable = response.status >= 500;
    throw error;
  }
  return body;
}

/** Finish the code flow on the callback page load: check state, redeem the code with the verifier. */
export async function completeSignIn(oidc) {
  const params = new URLSearchParams(location.search);
  // The code must not stay in the address bar or the history.
  history.replaceState(null, '', redirectUri());
  let flow = null;
  try { flow = JSON.parse(sessionStorage.getItem(FLOW_KEY)); } catch (e) { /* none */ }
  sessionStorage.removeItem(FLOW_KEY);
  if (params.has('error')) {
    throw new SignInError(params.get('error_description') || params.get('error'));
  }
  if (!flow || !params.get('state') || params.get('state') !== flow.state) {
    throw new SignInError('the sign-in answer does not match a sign-in started here (state); try again');
  }
  const answer = await tokenRequest(oidc, {
    grant_type: 'authorization_code', code: params.get('code'),
    redirect_uri: flow.redirect_uri, code_verifier: flow.verifier,
  });
  if (answer.id_token) {
    const claims = claimsOf(answer.id_token);
    if (claims && claims.nonce && claims.nonce !== flow.nonce) {
      throw new SignInError('the ID token does not belong to this sign-in (nonce)');
    }
  }
  return fromAnswer(answer, null);
}

/** New tokens from the refresh token (the refresh token rotates). */
export async function refreshTokens(oidc, tokens) {
  const answer = await tokenRequest(oidc, { grant_type: 'refresh_token', refresh_token: tokens.refresh_token });
  return fromAnswer(answer, tokens);
}

/** Where to send the browser to end the realm login too (null: nothing to end). */
export function endSessionUrl(oidc, tokens) {
  if (!oidc || !oidc.end_session_endpoint || !tokens || !tokens.id_token) return null;
  const query = new URLSearchParams({
    id_token_hint: tokens.id_token, client_id: oidc.client_id, post_logout_redirect_uri: redirectUri(),
  });
  return oidc.end_session_endpoint + '?' + query.toString();
}
