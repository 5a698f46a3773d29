"""`wampchat component <dotted.ClassName>`: run a service session out of process.

The same ApplicationSession class that runs in-process (``components`` in the node
configuration) connects over WebSocket (``ws://…``) or RawSocket (``rs://host:port`` or
``tcp://host:port``, CBOR) and authenticates as a backend, either

* with a Keycloak service-account token (client-credentials grant): WAMPCHAT_TOKEN_URL
  (or --token-url), WAMPCHAT_CLIENT_ID, WAMPCHAT_CLIENT_SECRET. The token is fetched
  with treq before a connection when the one held is close to expiry or was refused
  (ABORT), and renewed while joined by calling ``wampchat.session.refresh(token)``
  before it expires; or
* with WAMP-CRA: WAMPCHAT_BACKEND_AUTHID and WAMPCHAT_BACKEND_SECRET.

``--extra`` (JSON) becomes ``config.extra``; DATABASE_URL, when set, is its ``dsn``
unless --extra gives one (the chat service keeps its history there).

autobahn.twisted.component.Component reconnects with backoff (max_retries=-1) when the
router goes away; the class is its session_factory.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import urlsplit

from autobahn.twisted.component import Component
from autobahn.wamp.auth import AuthTicket, AuthWampCra
from twisted.internet.defer import ensureDeferred

from wampchat.components import load_component_class
from wampchat.logs import Logger

log = Logger()

REFRESH_MARGIN = 30.0       # seconds before expiry a token is renewed
MIN_REFRESH_DELAY = 1.0


class SetupError(Exception):
    """The command line or environment does not describe a runnable component."""


@dataclass(frozen=True)
class ClientCredentials:
    token_url: str
    client_id: str
    client_secret: str


def transport_for(url: str, initial_retry_delay: float = 1.0,
                  max_retry_delay: float = 30.0) -> dict[str, Any]:
    """An autobahn Component transport for ws(s)://… or tcp://host:port (rawsocket)."""
    retry = {"max_retries": -1, "initial_retry_delay": initial_retry_delay,
             "max_retry_delay": max_retry_delay, "retry_delay_growth": 1.5}
    parts = urlsplit(url)
    if parts.scheme in ("ws", "wss"):
        return {"type": "websocket", "url": url, **retry}
    if parts.scheme in ("tcp", "rs"):
        if not parts.hostname or not parts.port:
            raise SetupError(f"rawsocket URL needs host and port: {url!r}")
        # RawSocket negotiates exactly one serializer in its handshake (autobahn wants
        # `serializer`, singular, for it); CBOR is compact and every router serializer set has it.
        return {"type": "rawsocket", "url": f"rs://{parts.hostname}:{parts.port}",
                "endpoint": {"type": "tcp", "host": parts.hostname, "port": parts.port},
                "serializer": "cbor", **retry}
    raise SetupError(f"unsupported URL {url!r}: use ws://, wss://, rs://host:port or "
                     "tcp://host:port")


class ServiceAccountTicket(AuthTicket):
    """ticket auth with a service-account token fetched (and renewed) on demand."""

    def __init__(self, credentials: ClientCredentials, reactor: Any) -> None:
        super().__init__(ticket="")
        self.credentials = credentials
        self.reactor = reactor
        self.token: str | None = None
        self.expires_at = 0.0

    def fresh_enough(self) -> bool:
        return self.token is not None and self.expires_at - self.reactor.seconds() > REFRESH_MARGIN

    async def fetch(self) -> str:
        """A new access token from the client-credentials grant."""
        import treq
        response = await treq.post(
            self.credentials.token_url,
            data={"grant_type": "client_credentials",
                  "client_id": self.credentials.client_id,
                  "client_secret": self.credentials.client_secret},
            persistent=False, timeout=10)
        body = await treq.content(response)
        if response.code != 200:
            raise RuntimeError(f"token endpoint answered {response.code}: "
                               f"{body[:200].decode('utf-8', 'replace')}")
        document = json.loads(body)
        self.token = document["access_token"]
        self.expires_at = self.reactor.seconds() + float(document.get("expires_in", 300))
        log.info("service-account token obtained (expires in {s} s)",
                 s=document.get("expires_in"))
        return self.token

    async def current(self) -> str:
        return self.token if self.fresh_enough() else await self.fetch()

    def forget(self) -> None:
        """The router refused the token (e.g. a restarted issuer with new keys): fetch anew."""
        self.token = None
        self.expires_at = 0.0

    def on_challenge(self, session, challenge):
        return ensureDeferred(self.current())

    def refresh_delay(self) -> float:
        return max(MIN_REFRESH_DELAY, self.expires_at - self.reactor.seconds() - REFRESH_MARGIN)


class TokenRefresher:
    """While a session is joined, renew its token with wampchat.session.refresh in time."""

    def __init__(self, ticket: ServiceAccountTicket, reactor: Any) -> None:
        self.ticket = ticket
        self.reactor = reactor
        self.timer = None
        self.session = None
        self.refreshed = 0          # successful wampchat.session.refresh calls

    def joined(self, session, details) -> None:
        self.session = session
        self._schedule()

    def left(self, session, details) -> None:
        self.session = None
        self._cancel()

    def _cancel(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None

    def _schedule(self, delay: float | None = None) -> None:
        self._cancel()
        self.timer = self.reactor.callLater(
            self.ticket.refresh_delay() if delay is None else delay,
            lambda: ensureDeferred(self._refresh()))

    async def _refresh(self) -> None:
        self.timer = None
        session = self.session
        if session is None:
            return
        try:
            token = await self.ticket.fetch()
            await session.call("wampchat.session.refresh", token)
            self.refreshed += 1
            log.info("session credentials refreshed")
        except Exception as exc:       # retry soon; the router closes us if the token expires
            log.warn("token refresh failed: {exc}", exc=exc)
            if self.session is session:
                self._schedule(5.0)
            return
        if self.session is session:
            self._schedule()


def credentials_from(environ: Mapping[str, str], token_url: str | None) -> ClientCredentials | None:
    url = token_url or environ.get("WAMPCHAT_TOKEN_URL", "")
    client_id = environ.get("WAMPCHAT_CLIENT_ID", "")
    secret = environ.get("WAMPCHAT_CLIENT_SECRET", "")
    if not url:
        return None
    if not client_id or not secret:
        raise SetupError("client-credentials auth needs WAMPCHAT_CLIENT_ID and "
                         "WAMPCHAT_CLIENT_SECRET")
    return ClientCredentials(url, client_id, secret)


def authenticating(cls: type, authenticator: Any):
    """A session_factory: cls, joining with authenticator's method and answering its challenge.

    (ApplicationSession has no add_authenticator, so HELLO and CHALLENGE are handled
    here; the class's own onJoin/onLeave are untouched.)
    """
    def create(config):
        session = cls(config)
        authid = authenticator._args.get("authid")

        joined = []

        def on_connect():
            session.join(config.realm, authmethods=[authenticator.name], authid=authid)

        def on_leave(session, details):
            # ABORT before WELCOME: whatever credential we hold may be the cause, so the
            # next attempt starts from a fresh one instead of repeating the refusal.
            if not joined:
                log.warn("router refused the session: {reason} {message}",
                         reason=details.reason, message=details.message or "")
                forget = getattr(authenticator, "forget", None)
                if forget is not None:
                    forget()

        session.onConnect = on_connect
        session.on("join", lambda session, details: joined.append(True))
        session.on("leave", on_leave)
        session.onChallenge = lambda challenge: authenticator.on_challenge(session, challenge)
        return session
    return create


def with_database(extra: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """extra with "dsn" from DATABASE_URL unless --extra names one: a DSN holds a
    password, which an argument would show to every user of the machine (ps)."""
    if "dsn" not in extra and environ.get("DATABASE_URL"):
        return dict(extra, dsn=environ["DATABASE_URL"])
    return extra


def build_component(classname: str, url: str, realm: str, extra: dict[str, Any],
                    environ: Mapping[str, str], reactor: Any,
                    token_url: str | None = None) -> Component:
    """The autobahn Component running classname, authenticating as a backend."""
    try:
        cls = load_component_class(classname)
    except ValueError as exc:
        raise SetupError(str(exc)) from None
    credentials = credentials_from(environ, token_url)
    refresher = None
    if credentials is not None:
        ticket = ServiceAccountTicket(credentials, reactor)
        refresher = TokenRefresher(ticket, reactor)
        authenticator: Any = ticket
    else:
        authid = environ.get("WAMPCHAT_BACKEND_AUTHID", "")
        secret = environ.get("WAMPCHAT_BACKEND_SECRET", "")
        if not authid or not secret:
            raise SetupError("no backend credentials: set WAMPCHAT_TOKEN_URL (or --token-url), "
                             "WAMPCHAT_CLIENT_ID and WAMPCHAT_CLIENT_SECRET, or "
                             "WAMPCHAT_BACKEND_AUTHID and WAMPCHAT_BACKEND_SECRET")
        # AuthWampCra answers with compute_wcs (salted secrets derived when the router asks)
        authenticator = AuthWampCra(authid=authid, secret=secret)
    component = Component(transports=[transport_for(url)], realm=realm, extra=dict(extra),
                          session_factory=authenticating(cls, authenticator))
    component.on("join", lambda session, details: log.info(
        "{cls} joined {realm} as {authid} ({authrole})", cls=classname, realm=details.realm,
        authid=details.authid, authrole=details.authrole))
    component.refresher = refresher
    if refresher is not None:
        component.on("join", refresher.joined)
        component.on("leave", refresher.left)
    return component


def run(args: Any, environ: Mapping[str, str] | None = None) -> int:
    """`wampchat component`: run until SIGTERM/SIGINT; 2 for a setup error."""
    import sys

    from twisted.internet import task

    environ = os.environ if environ is None else environ
    try:
        extra = json.loads(args.extra) if args.extra else {}
        if not isinstance(extra, dict):
            raise SetupError("--extra must be a JSON object")
        extra = with_database(extra, environ)
        from twisted.internet import reactor as default_reactor
        component = build_component(args.classname, args.url, args.realm, extra, environ,
                                    default_reactor, token_url=args.token_url)
    except (SetupError, json.JSONDecodeError) as exc:
        print(f"wampchat: {exc}", file=sys.stderr)
        return 2

    def main(reactor):
        reactor.addSystemEventTrigger("before", "shutdown", component.stop)
        return component.start(reactor)

    task.react(main)
    return 0
