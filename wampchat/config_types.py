"""The parsed node configuration: frozen values, produced only by wampchat.config.

Nothing past config.py sees raw YAML dicts; everything else takes these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

MatchPolicy = Literal["exact", "prefix", "wildcard"]
Action = Literal["call", "register", "publish", "subscribe"]


@dataclass(frozen=True)
class PermissionConfig:
    """One permission row of a role: which actions on which URIs."""

    uri: str
    match: MatchPolicy = "exact"
    call: bool = False
    register: bool = False
    publish: bool = False
    subscribe: bool = False
    disclose_caller: bool = False
    disclose_publisher: bool = False
    max_payload: int | None = None     # bytes of serialized args+kwargs; None: no limit


@dataclass(frozen=True)
class RoleConfig:
    name: str
    permissions: tuple[PermissionConfig, ...] = ()


@dataclass(frozen=True)
class RealmConfig:
    name: str
    roles: tuple[RoleConfig, ...] = ()


@dataclass(frozen=True)
class RoleMappingRule:
    """Keycloak role -> WAMP authrole; ``role is None`` is the catch-all default."""

    authrole: str
    role: str | None = None


@dataclass(frozen=True)
class KeycloakAuthConfig:
    """The `ticket` authenticator of type `keycloak`."""

    issuer: str
    client_id: str
    jwks_url: str | None = None        # explicit; else discovery, else <issuer>/protocol/openid-connect/certs
    algorithms: tuple[str, ...] = ("RS256",)
    jwks_ttl: float = 3600.0
    min_refresh_interval: float = 10.0
    leeway: float = 30.0
    min_rsa_key_bits: int = 2048
    role_mapping: tuple[RoleMappingRule, ...] = (
        RoleMappingRule(authrole="backend", role="wampchat-backend"),
        RoleMappingRule(authrole="admin", role="admin"),
        RoleMappingRule(authrole="admin", role="ROLE_ADMIN"),
        RoleMappingRule(authrole="user", role=None),
    )


@dataclass(frozen=True)
class StaticPrincipal:
    """A static ticket or WAMP-CRA principal (a backend component)."""

    authid: str
    role: str
    secret: str                        # ticket or CRA secret (from ${ENV})
    salt: str | None = None
    iterations: int = 1000
    keylen: int = 32


@dataclass(frozen=True)
class AuthMethodConfig:
    """How one authmethod is served on a transport (Crossbar's `auth.<method>`)."""

    method: Literal["ticket", "wampcra", "anonymous"]
    type: Literal["static", "dynamic", "function", "keycloak"]
    principals: tuple[StaticPrincipal, ...] = ()   # static ticket/wampcra
    role: str | None = None                        # static anonymous
    authenticator: str | None = None               # dynamic: procedure URI; function: dotted name
    authenticator_realm: str | None = None         # dynamic: realm where the procedure is registered
    keycloak: KeycloakAuthConfig | None = None


@dataclass(frozen=True)
class WebSocketOptions:
    auto_ping_interval: float = 10.0   # seconds; 0 disables
    auto_ping_timeout: float = 5.0
    max_message_size: int = 1048576    # bytes, after permessage-deflate inflation
    allow_query_token: bool = False
    compression: bool = True           # permessage-deflate
    open_handshake_timeout: float = 10.0


@dataclass(frozen=True)
class Endpoint:
    interface: str = "127.0.0.1"
    port: int = 8080


@dataclass(frozen=True)
class TransportConfig:
    """A listening transport. `web`: / (static), /ws, /healthz, /metrics, /backchannel-logout."""

    type: Literal["web", "websocket", "rawsocket"]
    endpoint: Endpoint
    serializers: tuple[str, ...] = ("json", "msgpack", "cbor")
    auth: tuple[AuthMethodConfig, ...] = ()
    options: WebSocketOptions = field(default_factory=WebSocketOptions)
    web_directory: str | None = None   # `web`: directory served at /
    ws_path: str = "ws"                # `web`: path of the WebSocket
    max_message_size: int = 1048576    # rawsocket


@dataclass(frozen=True)
class ComponentConfig:
    """A service attached in-process over the memory transport."""

    classname: str
    realm: str
    role: str = "backend"
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DatabaseConfig:
    dsn: str | None = None             # None/empty: embedded throwaway PostgreSQL in dev
    pool_size: int = 5
    statement_timeout_ms: int = 5000
    migrate_on_start: bool = True
    connect_timeout: float = 5.0       # seconds to open a connection (psycopg2 async ignores the DSN's)
    max_waiting: int = 100             # queries that may wait for a busy pool; more get unavailable


@dataclass(frozen=True)
class LimitsConfig:
    """Per-session limits that keep one client from hurting the others."""

    outbound_buffer_bytes: int = 4 * 1024 * 1024
    hello_timeout: float = 10.0
    authenticate_timeout: float = 30.0
    max_uri_length: int = 512
    max_connections: int = 0                       # WAMP connections per node; 0: no limit
    max_connections_per_address: int = 0           # per client IP; 0: no limit
    message_rate: float = 0.0                      # requests/s per session (token bucket); 0: off
    message_burst: int = 100                       # requests a session may send at once
    rate_exempt_roles: tuple[str, ...] = ("backend",)
    max_subscriptions_per_session: int = 1000
    max_registrations_per_session: int = 1000
    max_failed_logins_per_address: int = 0         # then the address is blocked; 0: off
    failed_login_block_seconds: float = 30.0       # the counting window, and the block


@dataclass(frozen=True)
class NodeConfig:
    """The whole node: one router worker."""

    realms: tuple[RealmConfig, ...]
    transports: tuple[TransportConfig, ...]
    components: tuple[ComponentConfig, ...] = ()
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    source: str | None = None          # path of the file, for messages
