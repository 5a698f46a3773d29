"""A Keycloak-compatible development issuer: one realm, demo users, RS256 tokens.

Used by ``wampchat dev`` and by tests. It serves, under ``/realms/<realm>/``,
what the router and the web client use from Keycloak: discovery, the JWKS, the
token endpoint (password, client_credentials, refresh_token and
authorization_code + PKCE grants), a minimal login page for the code flow,
token introspection, and the end-session (logout) endpoint, which sends an OIDC
back-channel logout token to the configured URL as Keycloak does. Its access
tokens are shaped like Keycloak's, so they go through exactly the same
validation as real ones. A dev-only POST .../dev/rotate-key (loopback callers
only) rotates the signing key. Not a security product: in-memory, demo only.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import secrets
import uuid
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import urlencode, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from wampchat.logs import Logger

log = Logger()

ACCESS_LIFETIME = 300
REFRESH_LIFETIME = 1800
CODE_LIFETIME = 60
BACKCHANNEL_TIMEOUT = 5.0      # seconds the end-session endpoint waits for the back-channel POST
BACKCHANNEL_LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"


@dataclass(frozen=True)
class DemoUser:
    """A realm user who logs in with the password grant or the login page."""

    username: str
    password: str
    email: str | None
    name: str
    roles: tuple[str, ...]


DEMO_USERS: tuple[DemoUser, ...] = (
    DemoUser("alice", "alice", "alice@example.com", "Alice Demo", ("user",)),
    DemoUser("bob", "bob", "bob@example.com", "Bob Demo", ("user",)),
    DemoUser("admin", "admin", "admin@example.com", "Admin Demo", ("admin",)),
)


class GrantError(Exception):
    """An OAuth error answer: HTTP status, `error` code and description."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status, self.error, self.description = status, error, description


@dataclass(frozen=True)
class _Login:
    """Who a refresh token or an authorization code stands for."""

    username: str               # a demo user, or the service-account client id
    client_id: str
    sid: str
    scope: str
    expires_at: float
    code_challenge: str = ""
    redirect_uri: str = ""
    nonce: str = ""


def stable_sub(username: str) -> str:
    """The user's id: a UUID stable across runs, so a kept database still matches."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"wampchat-dev-issuer:{username}"))


def pkce_s256(verifier: str) -> str:
    """The S256 code_challenge of a code_verifier (RFC 7636)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class DevIssuer:
    """The development realm. ``resource`` is mounted at /realms/<realm>/.

    ``client_id`` is the router's (public) client; ``backend_client_id`` is a
    confidential client whose service account carries the ``wampchat-backend``
    role. ``mint()`` signs an access token directly, for tests.

    ``backchannel_logout_url`` (settable later, e.g. once the router listens) is
    where a logout at the end-session endpoint POSTs the signed logout token,
    with ``http`` (treq or a stand-in; treq when None).
    """

    def __init__(self, issuer_url: str, clock: IReactorTime,
                 users: tuple[DemoUser, ...] = DEMO_USERS, client_id: str = "wampchat",
                 backend_client_id: str = "wampchat-backend",
                 backend_secret: str = "wampchat-backend-secret",
                 allow_redirect: Callable[[str], bool] | None = None,
                 backchannel_logout_url: str | None = None, http: Any = None) -> None:
        self.issuer = issuer_url.rstrip("/")
        self.realm = self.issuer.rsplit("/", 1)[-1]
        self.clock = clock
        self.users = {user.username: user for user in users}    # username -> DemoUser
        self.client_id = client_id
        self.backend_client_id = backend_client_id
        self.backend_secret = backend_secret
        self._allow_redirect = allow_redirect or _loopback_redirect
        self._keys: list[tuple[str, rsa.RSAPrivateKey]] = []     # (kid, key), newest first
        self._refresh_tokens: dict[str, _Login] = {}              # refresh token -> login
        self._codes: dict[str, _Login] = {}                       # authorization code -> login
        self._ended_sids: set[str] = set()                        # login sessions logged out
        self.backchannel_logout_url = backchannel_logout_url
        self.http = http                                          # treq when None
        self.rotate_key()
        self.resource = _realm_resource(self)

    # -- keys -------------------------------------------------------------------------

    def rotate_key(self, keep_previous: bool = True) -> str:
        """Sign with a new RS256 key from now on; the JWKS keeps the previous one if asked."""
        kid = secrets.token_urlsafe(12)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._keys = [(kid, key)] + (self._keys[:1] if keep_previous else [])
        return kid

    @property
    def kid(self) -> str:
        return self._keys[0][0]

    def jwks(self) -> dict[str, Any]:
        """The realm's public signing keys, as /certs serves them."""
        keys = []
        for kid, key in self._keys:
            jwk = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
            keys.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})
        return {"keys": keys}

    def discovery(self) -> dict[str, Any]:
        base = f"{self.issuer}/protocol/openid-connect"
        return {
            "issuer": self.issuer, "authorization_endpoint": f"{base}/auth",
            "token_endpoint": f"{base}/token", "jwks_uri": f"{base}/certs",
            "introspection_endpoint": f"{base}/token/introspect",
            "end_session_endpoint": f"{base}/logout",
            "backchannel_logout_supported": True, "backchannel_logout_session_supported": True,
            "grant_types_supported": ["authorization_code", "password", "client_credentials",
                                      "refresh_token"],
            "response_types_supported": ["code"], "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
        }

    def _sign(self, claims: dict[str, Any]) -> str:
        kid, key = self._keys[0]
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid, "typ": "JWT"})

    # -- tokens -----------------------------------------------------------------------

    def mint(self, username: str, *, client_id: str | None = None, sid: str | None = None,
             scope: str = "openid email profile", **overrides: Any) -> str:
        """A signed access token for a demo user (or the backend client's service account).

        ``overrides`` replace claims; an override of None removes the claim.
        """
        return self._sign(self.access_claims(username, client_id or self.client_id,
                                             sid or str(uuid.uuid4()), scope, overrides))

    def access_claims(self, username: str, client_id: str, sid: str, scope: str,
                      overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """The payload Keycloak would issue for this login."""
        now = int(self.clock.seconds())
        roles = self._roles(username)
        claims: dict[str, Any] = {
            "exp": now + ACCESS_LIFETIME, "iat": now, "auth_time": now, "jti": str(uuid.uuid4()),
            "iss": self.issuer, "aud": ["account"], "sub": stable_sub(username), "typ": "Bearer",
            "azp": client_id, "sid": sid, "session_state": sid, "acr": "1", "scope": scope,
            "realm_access": {"roles": [*roles, "offline_access", "uma_authorization",
                                       f"default-roles-{self.realm}"]},
            "resource_access": {"account": {"roles": ["manage-account", "view-profile"]}},
        }
        if client_id != self.client_id:
            # The audience mapper a real realm configures so other clients' tokens reach us.
            claims["aud"] = [self.client_id, "account"]
        user = self.users.get(username)
        if user is not None:
            claims.update(name=user.name, preferred_username=user.username,
                          email_verified=user.email is not None)
            if user.email:
                claims["email"] = user.email
        else:
            claims["preferred_username"] = f"service-account-{username}"
        claims.update(overrides or {})
        return {k: v for k, v in claims.items() if v is not None}

    def _roles(self, username: str) -> list[str]:
        if username == self.backend_client_id:
            return ["wampchat-backend"]
        return list(self.users[username].roles)

    def mint_logout(self, sub: str | None = None, sid: str | None = None,
                    **overrides: Any) -> str:
        """A back-channel logout token (OIDC) for a user's sub and/or login session."""
        now = int(self.clock.seconds())
        claims = {"iat": now, "exp": now + 60, "jti": str(uuid.uuid4()), "iss": self.issuer,
                  "aud": self.client_id, "typ": "Logout", "sub": sub, "sid": sid,
                  "events": {BACKCHANNEL_LOGOUT_EVENT: {}}}
        claims.update(overrides)
        return self._sign({k: v for k, v in claims.items() if v is not None})

    def _issue(self, login: _Login) -> dict[str, Any]:
        """The token endpoint's answer for a login; a new refresh token replaces the old."""
        now = self.clock.seconds()
        access = self._sign(self.access_claims(login.username, login.client_id, login.sid,
                                               login.scope))
        refresh = self._sign({"exp": int(now) + REFRESH_LIFETIME, "iat": int(now),
                              "jti": str(uuid.uuid4()), "iss": self.issuer, "aud": self.issuer,
                              "sub": stable_sub(login.username), "typ": "Refresh",
                              "azp": login.client_id, "sid": login.sid, "scope": login.scope})
        self._refresh_tokens = {token: grant for token, grant in self._refresh_tokens.items()
                                if grant.expires_at > now}
        self._refresh_tokens[refresh] = _Login(login.username, login.client_id, login.sid,
                                               login.scope, now + REFRESH_LIFETIME)
        answer = {"access_token": access, "expires_in": ACCESS_LIFETIME,
                  "refresh_expires_in": REFRESH_LIFETIME, "refresh_token": refresh,
                  "token_type": "Bearer", "not-before-policy": 0, "session_state": login.sid,
                  "scope": login.scope}
        if "openid" in login.scope.split():
            answer["id_token"] = self._sign(self.id_claims(login))
        return answer

    def id_claims(self, login: _Login) -> dict[str, Any]:
        """An ID token (typ ID) for a login: what end-session takes as id_token_hint."""
        access = self.access_claims(login.username, login.client_id, login.sid, login.scope)
        claims = {name: access[name] for name in (
            "exp", "iat", "auth_time", "iss", "sub", "sid", "session_state", "acr", "name",
            "preferred_username", "email", "email_verified") if name in access}
        claims.update(jti=str(uuid.uuid4()), aud=login.client_id, azp=login.client_id, typ="ID")
        if login.nonce:
            claims["nonce"] = login.nonce
        return claims

    def _verified(self, token: str) -> dict[str, Any] | None:
        """The claims of a token this realm signed with a key it still publishes, else None.

        Times are not checked here: callers decide (an expired id_token_hint is fine).
        """
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            key = next(key for known, key in self._keys if known == kid)
            claims = jwt.decode(token, key.public_key(), algorithms=["RS256"],
                                options={"verify_aud": False, "verify_exp": False,
                                         "verify_iat": False, "verify_nbf": False})
        except (jwt.PyJWTError, StopIteration, TypeError, ValueError):
            return None
        return claims if claims.get("iss") == self.issuer else None

    # -- the token endpoint -----------------------------------------------------------

    def token_grant(self, form: dict[str, str], basic: tuple[str, str] | None = None
                    ) -> dict[str, Any]:
        """Answer one token request (form fields as text). Raises GrantError."""
        client_id, secret = basic or (form.get("client_id", ""), form.get("client_secret"))
        self._check_client(client_id, secret)
        grant_type = form.get("grant_type", "")
        scope = form.get("scope") or "openid email profile"
        if grant_type == "password":
            user = self.users.get(form.get("username", ""))
            if user is None or not secrets.compare_digest(user.password, form.get("password", "")):
                raise GrantError(401, "invalid_grant", "Invalid user credentials")
            return self._issue(_Login(user.username, client_id, str(uuid.uuid4()), scope, 0))
        if grant_type == "client_credentials":
            if client_id != self.backend_client_id:
                raise GrantError(401, "unauthorized_client",
                                 "Client not enabled to retrieve service account")
            return self._issue(_Login(client_id, client_id, str(uuid.uuid4()), scope, 0))
        if grant_type == "refresh_token":
            login = self._refresh_tokens.pop(form.get("refresh_token", ""), None)
            if login is None or login.expires_at <= self.clock.seconds() \
                    or login.client_id != client_id or login.sid in self._ended_sids:
                raise GrantError(400, "invalid_grant", "Invalid refresh token")
            return self._issue(login)
        if grant_type == "authorization_code":
            return self._issue(self._redeem_code(form, client_id))
        raise GrantError(400, "unsupported_grant_type", "Unsupported grant_type")

    def _check_client(self, client_id: str, secret: str | None) -> None:
        if client_id == self.client_id:
            return                                  # the public client of the web page
        if client_id == self.backend_client_id and secret is not None \
                and secrets.compare_digest(secret, self.backend_secret):
            return
        raise GrantError(401, "invalid_client", "Invalid client or Invalid client credentials")

    # -- token introspection (RFC 7662, as Keycloak answers it) ---------------------------

    def introspect(self, form: dict[str, str], basic: tuple[str, str] | None = None
                   ) -> dict[str, Any]:
        """{"active": true, ...claims} for a live token; {"active": false} otherwise.

        Only the confidential (backend) client may ask, as in Keycloak. Raises GrantError.
        """
        client_id, secret = basic or (form.get("client_id", ""), form.get("client_secret"))
        self._check_client(client_id, secret)
        if client_id == self.client_id:
            raise GrantError(401, "invalid_client",
                             "Public client is not permitted to invoke token introspection")
        claims = self._verified(form.get("token", ""))
        if (claims is None or claims.get("typ") not in ("Bearer", "Refresh")
                or type(claims.get("exp")) is not int
                or claims["exp"] <= self.clock.seconds()
                or claims.get("sid") in self._ended_sids):
            return {"active": False}
        return {**claims, "active": True, "client_id": claims.get("azp"),
                "username": claims.get("preferred_username"), "token_type": claims["typ"]}

    # -- end session (logout) -------------------------------------------------------------

    def end_session_request(self, params: dict[str, str], basic: tuple[str, str] | None = None
                            ) -> tuple[str, str, str | None]:
        """(sub, sid, redirect or None) of a logout request. Raises GrantError.

        Keycloak's parameters: ``id_token_hint`` (an ID token of this realm, expired
        or not) with optional ``client_id``, or ``refresh_token`` with ``client_id``
        (and ``client_secret`` for the confidential client); ``post_logout_redirect_uri``
        (loopback only here) with optional ``state``.
        """
        client_id = (basic[0] if basic else params.get("client_id")) or None
        hint, refresh = params.get("id_token_hint"), params.get("refresh_token")
        if hint:
            claims = self._verified(hint)
            if claims is None or claims.get("typ") != "ID" or not isinstance(claims.get("sub"), str):
                raise GrantError(400, "invalid_request", "Invalid id_token_hint")
            if client_id is not None and client_id != claims.get("azp"):
                raise GrantError(400, "invalid_request", "Parameter client_id different than "
                                 "the client for which ID Token was issued")
            sub, sid = claims["sub"], str(claims.get("sid") or "")
        elif refresh:
            self._check_client(client_id or "", basic[1] if basic else params.get("client_secret"))
            login = self._refresh_tokens.get(refresh)
            if login is None or login.client_id != client_id or login.sid in self._ended_sids:
                raise GrantError(400, "invalid_grant", "Invalid refresh token")
            sub, sid = stable_sub(login.username), login.sid
        else:
            raise GrantError(400, "invalid_request",
                             "id_token_hint or refresh_token (with client_id) is required")
        if not sid:
            raise GrantError(400, "invalid_request", "The token names no login session")
        redirect = params.get("post_logout_redirect_uri")
        if redirect:
            if not self._allow_redirect(redirect):
                raise GrantError(400, "invalid_request", "Invalid redirect uri")
            if params.get("state"):
                redirect += ("&" if "?" in redirect else "?") + urlencode({"state": params["state"]})
        return sub, sid, redirect or None

    def end_login(self, sub: str, sid: str) -> Deferred:
        """End login session sid: its refresh tokens and codes stop working, its tokens
        introspect inactive, and the back-channel logout token goes out.

        The Deferred fires (never fails) with the back-channel answer's HTTP status,
        or None when nothing was sent or the POST failed (logged).
        """
        self._ended_sids.add(sid)
        self._refresh_tokens = {token: login for token, login in self._refresh_tokens.items()
                                if login.sid != sid}
        self._codes = {code: login for code, login in self._codes.items() if login.sid != sid}
        return self.send_backchannel_logout(sub, sid)

    def send_backchannel_logout(self, sub: str | None, sid: str | None) -> Deferred:
        """POST a signed logout token (form field logout_token) to backchannel_logout_url."""
        url = self.backchannel_logout_url
        if not url:
            return ensureDeferred(_nothing())
        return ensureDeferred(self._post_logout(url, self.mint_logout(sub=sub, sid=sid)))

    async def _post_logout(self, url: str, token: str) -> int | None:
        options: dict[str, Any] = {"timeout": BACKCHANNEL_TIMEOUT, "reactor": self.clock}
        http = self.http
        if http is None:
            import treq as http          # the real client only when none was given
            options["persistent"] = False    # rare calls: no pooled connection to go stale
        try:
            response = await http.post(url, data={"logout_token": token}, **options)
            await response.content()
        except Exception as exc:
            log.warn("back-channel logout to {url} failed: {error}", url=url,
                     error=type(exc).__name__)
            return None
        if response.code != 200:
            log.warn("back-channel logout to {url} answered HTTP {code}", url=url,
                     code=response.code)
        return response.code

    # -- authorization code + PKCE ----------------------------------------------------

    def check_authorization_request(self, params: dict[str, str]) -> None:
        """Refuse (GrantError) what must not even show a login page."""
        if params.get("client_id") != self.client_id:
            raise GrantError(400, "invalid_client", "Client not found.")
        if not self._allow_redirect(params.get("redirect_uri", "")):
            raise GrantError(400, "invalid_request", "Invalid parameter: redirect_uri")
        if params.get("response_type") != "code":
            raise GrantError(400, "unsupported_response_type", "Only response_type=code")
        if params.get("code_challenge_method") != "S256" or not params.get("code_challenge"):
            raise GrantError(400, "invalid_request", "PKCE with S256 is required")

    def authorize(self, params: dict[str, str]) -> str | None:
        """Log in from the form: the redirect URL with a code, or None for bad credentials."""
        self.check_authorization_request(params)
        user = self.users.get(params.get("username", ""))
        if user is None or not secrets.compare_digest(user.password, params.get("password", "")):
            return None
        sid = str(uuid.uuid4())
        code = secrets.token_urlsafe(32)
        self._codes[code] = _Login(user.username, self.client_id, sid,
                                   params.get("scope") or "openid email profile",
                                   self.clock.seconds() + CODE_LIFETIME,
                                   params["code_challenge"], params["redirect_uri"],
                                   params.get("nonce", ""))
        query = {"code": code, "session_state": sid, "iss": self.issuer}
        if params.get("state"):
            query["state"] = params["state"]
        redirect = params["redirect_uri"]
        return f"{redirect}{'&' if '?' in redirect else '?'}{urlencode(query)}"

    def _redeem_code(self, form: dict[str, str], client_id: str) -> _Login:
        login = self._codes.pop(form.get("code", ""), None)       # single use, even on failure
        if (login is None or login.expires_at <= self.clock.seconds()
                or login.client_id != client_id
                or login.redirect_uri != form.get("redirect_uri")):
            raise GrantError(400, "invalid_grant", "Code not valid")
        verifier = form.get("code_verifier", "")
        if not verifier or not secrets.compare_digest(pkce_s256(verifier), login.code_challenge):
            raise GrantError(400, "invalid_grant", "PKCE verification failed")
        return login


def _loopback_redirect(uri: str) -> bool:
    """Development default: redirect only to http(s) pages on this machine."""
    parts = urlsplit(uri)
    return parts.scheme in ("http", "https") and parts.hostname in ("127.0.0.1", "localhost", "::1")


# -- twisted.web ------------------------------------------------------------------------

def _text_args(args: dict[bytes, list[bytes]]) -> dict[str, str]:
    return {k.decode("utf-8", "replace"): v[0].decode("utf-8", "replace")
            for k, v in args.items() if v}


def _json(request, status: int, document: Any) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    request.setHeader(b"access-control-allow-origin", b"*")    # the web page fetches tokens
    return json.dumps(document).encode()


class _Endpoint(Resource):
    """A leaf whose methods are plain functions of the request."""

    isLeaf = True

    def __init__(self, **handlers: Callable[[Any], bytes]) -> None:
        super().__init__()
        self._handlers = handlers      # HTTP method -> handler

    def render(self, request) -> bytes:
        handler = self._handlers.get(request.method.decode("ascii", "replace"))
        if request.method == b"OPTIONS":
            request.setHeader(b"access-control-allow-origin", b"*")
            request.setHeader(b"access-control-allow-methods", b"GET, POST")
            request.setHeader(b"access-control-allow-headers", b"content-type, authorization")
            return b""
        if handler is None:
            request.setResponseCode(405)
            return b"method not allowed"
        return handler(request)


def _basic(request) -> tuple[str, str] | None:
    user, password = request.getUser(), request.getPassword()
    return (user.decode("utf-8", "replace"), password.decode("utf-8", "replace")) if user else None


def _token_endpoint(issuer: DevIssuer) -> _Endpoint:
    """/token, and /token/introspect below it (this leaf sees the rest of the path)."""
    def post(request) -> bytes:
        rest = [part for part in request.postpath if part]
        if rest not in ([], [b"introspect"]):
            request.setResponseCode(404)
            return b"not found"
        answer = issuer.introspect if rest else issuer.token_grant
        try:
            return _json(request, 200, answer(_text_args(request.args), _basic(request)))
        except GrantError as exc:
            return _json(request, exc.status, {"error": exc.error,
                                               "error_description": exc.description})
    return _Endpoint(POST=post)


_LOGGED_OUT_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>Logged out</title>
</head><body><h1>You are logged out of {realm}</h1></body></html>"""


def _logout_endpoint(issuer: DevIssuer) -> _Endpoint:
    """End session: redirect (302) when asked, 204 for the refresh_token form, else a page."""
    def handle(request):
        request.setHeader(b"access-control-allow-origin", b"*")
        params = _text_args(request.args)
        try:
            sub, sid, redirect = issuer.end_session_request(params, _basic(request))
        except GrantError as exc:
            return _json(request, exc.status, {"error": exc.error,
                                               "error_description": exc.description})
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))

        def answer(_status) -> None:
            if gone:
                return
            request.setHeader(b"cache-control", b"no-store")
            if redirect is not None:
                request.redirect(redirect.encode("utf-8"))
            elif params.get("refresh_token") and not params.get("id_token_hint"):
                request.setResponseCode(204)
            else:
                request.setHeader(b"content-type", b"text/html; charset=utf-8")
                request.write(_LOGGED_OUT_PAGE.format(realm=html.escape(issuer.realm)).encode())
            request.finish()

        # Like Keycloak, answer once the back-channel call is done (or failed).
        issuer.end_login(sub, sid).addCallback(answer)
        return NOT_DONE_YET
    return _Endpoint(GET=handle, POST=handle)


def _is_loopback(host: str | None) -> bool:
    return host in ("127.0.0.1", "::1", "localhost") or bool(host and host.startswith("127."))


class _DevAdmin(Resource):
    """POST <realm>/dev/rotate-key[?keep_previous=false]: development only, loopback callers.

    Not CORS-enabled and refused with a foreign Origin, so a web page cannot use it.
    """

    isLeaf = True

    def __init__(self, issuer: DevIssuer) -> None:
        super().__init__()
        self._issuer = issuer

    def render(self, request) -> bytes:
        if request.method != b"POST":
            request.setResponseCode(405)
            return b"method not allowed"
        if request.postpath != [b"rotate-key"]:
            request.setResponseCode(404)
            return b"not found"
        origin = request.getHeader(b"origin")
        peer = getattr(request.getClientAddress(), "host", None)
        if not _is_loopback(peer) or (origin and not _is_loopback(
                urlsplit(origin.decode("latin-1")).hostname)):
            request.setResponseCode(403)
            return b"forbidden"
        keep = _text_args(request.args).get("keep_previous", "true").lower() != "false"
        kid = self._issuer.rotate_key(keep_previous=keep)
        request.setResponseCode(200)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        return json.dumps({"kid": kid, "kids": [k["kid"] for k in self._issuer.jwks()["keys"]]}
                          ).encode()


_LOGIN_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>Sign in to {realm}</title>
</head><body><h1>Sign in to {realm}</h1><p style="color:#b00">{error}</p>
<form method="post">{hidden}
<label>Username <input name="username" autofocus></label>
<label>Password <input name="password" type="password"></label>
<button type="submit">Sign in</button></form>
<p>Demo users: alice/alice, bob/bob, admin/admin.</p></body></html>"""

_FLOW_FIELDS = ("client_id", "redirect_uri", "response_type", "scope", "state", "nonce",
                "code_challenge", "code_challenge_method")


def _login_page(issuer: DevIssuer, request, params: dict[str, str], error: str = "") -> bytes:
    hidden = "".join(f'<input type="hidden" name="{name}" value="{html.escape(params[name])}">'
                     for name in _FLOW_FIELDS if name in params)
    request.setHeader(b"content-type", b"text/html; charset=utf-8")
    return _LOGIN_PAGE.format(realm=html.escape(issuer.realm), error=html.escape(error),
                              hidden=hidden).encode("utf-8")


def _auth_endpoint(issuer: DevIssuer) -> _Endpoint:
    def handle(request) -> bytes:
        params = _text_args(request.args)
        try:
            issuer.check_authorization_request(params)
            redirect = issuer.authorize(params) if request.method == b"POST" else None
        except GrantError as exc:
            request.setResponseCode(exc.status)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return f"{exc.error}: {exc.description}".encode()
        if redirect is not None:
            request.redirect(redirect.encode("utf-8"))
            return b""
        error = "Invalid username or password." if request.method == b"POST" else ""
        return _login_page(issuer, request, params, error)
    return _Endpoint(GET=handle, POST=handle)


def _realm_resource(issuer: DevIssuer) -> Resource:
    realm = Resource()
    well_known = Resource()
    well_known.putChild(b"openid-configuration",
                        _Endpoint(GET=lambda request: _json(request, 200, issuer.discovery())))
    realm.putChild(b".well-known", well_known)
    oidc = Resource()
    oidc.putChild(b"certs", _Endpoint(GET=lambda request: _json(request, 200, issuer.jwks())))
    oidc.putChild(b"token", _token_endpoint(issuer))
    oidc.putChild(b"auth", _auth_endpoint(issuer))
    oidc.putChild(b"logout", _logout_endpoint(issuer))
    protocol = Resource()
    protocol.putChild(b"openid-connect", oidc)
    realm.putChild(b"protocol", protocol)
    realm.putChild(b"dev", _DevAdmin(issuer))
    return realm


def realms_resource(issuer: DevIssuer) -> Resource:
    """The /realms resource holding this issuer at <realm>/: mount it on a site's root."""
    realms = Resource()
    realms.putChild(issuer.realm.encode("utf-8"), issuer.resource)
    return realms


def site_root(issuer: DevIssuer) -> Resource:
    """A root Resource with the realm at /realms/<realm>/ (for a standalone site or StubTreq)."""
    root = Resource()
    root.putChild(b"realms", realms_resource(issuer))
    return root


async def _nothing() -> None:
    return None
