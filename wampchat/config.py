"""crossbar-like.yaml -> NodeConfig: the only module that sees the raw YAML.

Reading happens in two passes. First every string scalar has ``${VAR}`` and
``${VAR:-default}`` replaced from the environment; then the tree is read section by
section into the frozen dataclasses of ``config_types``, converting strings to
int/float/bool where a field needs one and refusing unknown keys. Every refusal is a
``ConfigError`` naming the key path and what was expected.
"""

from __future__ import annotations

import os
import re
from dataclasses import replace
from typing import Any, Callable, Mapping, TypeVar

import yaml

from wampchat.config_types import (
    AuthMethodConfig, ComponentConfig, DatabaseConfig, Endpoint, KeycloakAuthConfig,
    LimitsConfig, NodeConfig, PermissionConfig, RealmConfig, RoleConfig, RoleMappingRule,
    StaticPrincipal, TransportConfig, WebSocketOptions)

T = TypeVar("T")
Parse = Callable[[Any, str], Any]        # (raw value, key path) -> parsed value
Roles = Mapping[str, set]                # realm name -> its role names

MATCH_POLICIES = ("exact", "prefix", "wildcard")
SERIALIZERS = ("json", "msgpack", "cbor")
# authmethod -> the authenticator types that can serve it
AUTH_TYPES = {"ticket": ("static", "dynamic", "function", "keycloak"),
              "wampcra": ("static", "dynamic", "function"),
              "anonymous": ("static", "dynamic", "function")}
# Asymmetric JWS algorithms only: "none" and HMAC (HS*) would let anyone forge tokens.
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
              "ES256", "ES384", "ES512", "ES256K", "EdDSA")

_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_PATH_SEGMENT = re.compile(r"^[A-Za-z0-9_.~-]+$")
_REQUIRED = object()                     # default of a required key


class ConfigError(Exception):
    """An invalid configuration: `path` of the bad key, what was `expected`, what we `got`.

    str(): ``<source>: <path>: expected <expected>, got <got>``.
    """

    def __init__(self, path: str, expected: str, got: str | None = None,
                 source: str | None = None) -> None:
        super().__init__(path, expected, got)
        self.path = path
        self.expected = expected
        self.got = got
        self.source = source

    def __str__(self) -> str:
        text = f"{self.path or '(top level)'}: expected {self.expected}"
        if self.got is not None:
            text += f", got {self.got}"
        return f"{self.source}: {text}" if self.source else text


def load_config(path: str, environ: Mapping[str, str] | None = None) -> NodeConfig:
    """Read and parse the YAML file at path (environ defaults to os.environ).

    Raises OSError if the file cannot be read, ConfigError if it is not valid.
    """
    with open(path, encoding="utf-8") as stream:
        try:
            data = yaml.safe_load(stream)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1}" if mark is not None else "(file)"
            raise ConfigError(where, "valid YAML", getattr(exc, "problem", None) or str(exc),
                              source=path) from None
    return parse_config(data, environ, source=path)


def parse_config(data: Any, environ: Mapping[str, str] | None = None,
                 source: str | None = None) -> NodeConfig:
    """The NodeConfig described by data (a parsed YAML document).

    environ defaults to os.environ. source is the file's path: it prefixes error
    messages, and a relative web directory is resolved against its directory (else
    kept as written). Raises ConfigError (with .source set) for any invalid key.
    """
    base_dir = os.path.dirname(os.path.abspath(source)) if source else None
    try:
        tree = _substitute(data, "", os.environ if environ is None else environ)
        return replace(_node(tree, base_dir), source=source)
    except ConfigError as err:
        err.source = err.source or source
        raise


def _substitute(value: Any, path: str, environ: Mapping[str, str]) -> Any:
    """value with ${VAR} / ${VAR:-default} replaced in every string scalar, recursively.

    As in the shell, the default also applies when VAR is set but empty.
    """
    if isinstance(value, dict):
        return {key: _substitute(item, _join(path, key), environ) for key, item in value.items()}
    if isinstance(value, list):
        return [_substitute(item, f"{path}[{i}]", environ) for i, item in enumerate(value)]
    if not isinstance(value, str):
        return value

    def expand(found: re.Match) -> str:
        name, default = found.group(1), found.group(2)
        if environ.get(name) or (default is None and name in environ):
            return environ[name]
        if default is not None:
            return default
        raise ConfigError(path, f"environment variable {name} to be set "
                          f"(or a default: ${{{name}:-value}})", repr(value))

    if "${" in _VARIABLE.sub("", value):
        raise ConfigError(path, "${VAR} or ${VAR:-default}", repr(value))
    return _VARIABLE.sub(expand, value)


# -- generic readers -----------------------------------------------------------------------

def _join(path: str, key: Any) -> str:
    if isinstance(key, str) and _PLAIN_KEY.match(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{key!r}]"


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class _Section:
    """One YAML mapping being read: refuses unknown keys, hands out parsed values by key.

    A key whose value is null counts as absent.
    """

    def __init__(self, value: Any, path: str, allowed: tuple[str, ...] | Mapping[str, Any]) -> None:
        if not isinstance(value, dict):
            raise ConfigError(path, "a mapping", _describe(value))
        for key in value:
            if key not in allowed:
                raise ConfigError(_join(path, key), f"one of {', '.join(allowed)}",
                                  "an unknown key")
        self.data = value
        self.path = path

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def at(self, key: str) -> str:
        return _join(self.path, key)

    def get(self, key: str, parse: Parse, default: Any = _REQUIRED) -> Any:
        """parse(value, path) of key; default if absent, ConfigError if required."""
        if not self.has(key):
            if default is _REQUIRED:
                raise ConfigError(self.at(key), "a value (required key)", "nothing")
            return default
        return parse(self.data[key], self.at(key))

    def pick(self, parsers: Mapping[str, Parse]) -> dict[str, Any]:
        """key -> parsed value, for the keys of parsers that are present."""
        return {key: self.get(key, parse) for key, parse in parsers.items() if self.has(key)}


def _type_of(value: Any, path: str, options: tuple[str, ...]) -> str:
    """The required `type` of a mapping whose other keys depend on it."""
    return _Section(value, path, value if isinstance(value, dict) else ()) \
        .get("type", _choice(*options))


def _flat(cls: Callable[..., T], value: Any, path: str, parsers: Mapping[str, Parse]) -> T:
    """cls(**fields) from a mapping of scalars; absent keys keep cls's defaults."""
    return cls(**_Section(value, path, parsers).pick(parsers))


def _text(non_empty: bool) -> Parse:
    expected = "a non-empty string" if non_empty else "a string"

    def parse(value: Any, path: str) -> str:
        if not isinstance(value, str) or (non_empty and not value.strip()):
            raise ConfigError(path, expected, _describe(value))
        return value
    return parse


_string, _name = _text(non_empty=False), _text(non_empty=True)


def _numeric(kind: type, low: float, high: float | None = None) -> Parse:
    """A kind (int or float) in [low, high]; a numeric string (e.g. "${PORT}") is converted."""
    noun = "an integer" if kind is int else "a number"
    expected = f"{noun} {low:g}-{high:g}" if high is not None else f"{noun} >= {low:g}"
    pattern = r"[+-]?\d+" if kind is int else r"[+-]?\d+(\.\d*)?"
    accepted = (int,) if kind is int else (int, float)

    def parse(value: Any, path: str) -> Any:
        number = kind(value) if isinstance(value, str) and re.fullmatch(pattern, value) else value
        if not isinstance(number, accepted) or isinstance(number, bool) \
                or not number >= low or (high is not None and number > high):   # refuses .nan
            raise ConfigError(path, expected, _describe(value))
        return kind(number)
    return parse


def _integer(low: int, high: int | None = None) -> Parse:
    return _numeric(int, low, high)


_number = _numeric(float, 0)         # seconds and the like


def _boolean(value: Any, path: str) -> bool:
    """true/false; the strings "true"/"false" (any case) are converted."""
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if not isinstance(value, bool):
        raise ConfigError(path, "true or false", _describe(value))
    return value


def _choice(*options: Any) -> Parse:
    names = [str(option) for option in options]
    expected = ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else names[0]

    def parse(value: Any, path: str) -> Any:
        if value not in options:
            raise ConfigError(path, expected, _describe(value))
        return value
    return parse


def _items(parse: Parse, what: str = "a list", non_empty: bool = False) -> Parse:
    """A list parsed item by item, as a tuple."""
    def parse_list(value: Any, path: str) -> tuple:
        if not isinstance(value, list) or (non_empty and not value):
            raise ConfigError(path, what, _describe(value))
        return tuple(parse(item, f"{path}[{i}]") for i, item in enumerate(value))
    return parse_list


def _unique(items: tuple, key: Callable[[Any], Any], path: str, what: str) -> None:
    seen: set = set()
    for i, item in enumerate(items):
        if key(item) in seen:
            raise ConfigError(f"{path}[{i}]", f"a unique {what}", _describe(key(item)))
        seen.add(key(item))


def _known_role(roles: set, value: Any, path: str) -> str:
    """value if it names one of roles (a ConfigError naming path otherwise)."""
    if value not in roles:
        raise ConfigError(path, f"a defined role ({', '.join(sorted(roles))})", _describe(value))
    return value


# -- node, realms, permissions, components ---------------------------------------------------

_ALLOW = dict.fromkeys(("call", "register", "publish", "subscribe"), _boolean)
_DISCLOSE = dict.fromkeys(("caller", "publisher"), _boolean)
_LIMITS: dict[str, Parse] = {
    "outbound_buffer_bytes": _integer(1), "hello_timeout": _number,
    "authenticate_timeout": _number, "max_uri_length": _integer(1),
    "max_connections": _integer(0), "max_connections_per_address": _integer(0),
    "message_rate": _number, "message_burst": _integer(1),
    "rate_exempt_roles": _items(_text(True), "a list of role names"),
    "max_subscriptions_per_session": _integer(1), "max_registrations_per_session": _integer(1),
    "max_failed_logins_per_address": _integer(0), "failed_login_block_seconds": _number}
_DATABASE: dict[str, Parse] = {"dsn": _string, "pool_size": _integer(1),
                               "statement_timeout_ms": _integer(0), "migrate_on_start": _boolean,
                               "connect_timeout": _numeric(float, 0.001),
                               "max_waiting": _integer(0)}


def _node(tree: Any, base_dir: str | None) -> NodeConfig:
    """The whole file: version 2, one router worker, database and limits."""
    top = _Section(tree, "", ("version", "workers", "database", "limits"))
    top.get("version", _choice(2))
    workers = top.get("workers", _items(lambda v, p: v, "a list with one router worker"))
    if len(workers) != 1:
        raise ConfigError("workers", "exactly one worker (type: router)", f"{len(workers)}")
    worker = _Section(workers[0], "workers[0]", ("type", "realms", "transports", "components"))
    worker.get("type", _choice("router"))
    realms = worker.get("realms", _items(_realm, "a list of at least one realm", True))
    _unique(realms, lambda realm: realm.name, worker.at("realms"), "realm name")
    roles = {realm.name: {role.name for role in realm.roles} for realm in realms}
    transports = worker.get("transports", _items(
        lambda v, p: _transport(v, p, roles, base_dir), "a list of at least one transport", True))
    database = top.get("database", lambda v, p: _flat(DatabaseConfig, v, p, _DATABASE),
                       DatabaseConfig())
    return NodeConfig(
        realms=realms, transports=transports,
        components=worker.get("components", _items(lambda v, p: _component(v, p, roles)), ()),
        database=replace(database, dsn=database.dsn or None),
        limits=top.get("limits", lambda v, p: _flat(LimitsConfig, v, p, _LIMITS), LimitsConfig()))


def _realm(value: Any, path: str) -> RealmConfig:
    section = _Section(value, path, ("name", "roles"))
    roles = section.get("roles", _items(_role), ())
    _unique(roles, lambda role: role.name, section.at("roles"), "role name")
    return RealmConfig(name=section.get("name", _name), roles=roles)


def _role(value: Any, path: str) -> RoleConfig:
    section = _Section(value, path, ("name", "permissions"))
    permissions = section.get("permissions", _items(_permission), ())
    _unique(permissions, lambda row: (row.uri, row.match), section.at("permissions"),
            "(uri, match) pair")
    return RoleConfig(name=section.get("name", _name), permissions=permissions)


def _permission(value: Any, path: str) -> PermissionConfig:
    section = _Section(value, path, ("uri", "match", "allow", "disclose", "max_payload"))
    match = section.get("match", _choice(*MATCH_POLICIES), "exact")
    uri = section.get("uri", _name if match == "exact" else _string)
    allow = section.get("allow", lambda v, p: _flat(dict, v, p, _ALLOW), {})
    disclose = section.get("disclose", lambda v, p: _flat(dict, v, p, _DISCLOSE), {})
    return PermissionConfig(uri=uri, match=match, **allow,
                            **{f"disclose_{key}": flag for key, flag in disclose.items()},
                            max_payload=section.get("max_payload", _integer(1), None))


def _component(value: Any, path: str, roles: Roles) -> ComponentConfig:
    section = _Section(value, path, ("type", "classname", "realm", "role", "extra"))
    section.get("type", _choice("class"))
    realm = section.get("realm", _choice(*roles))
    role = _known_role(roles[realm], section.get("role", _name, "backend"), section.at("role"))
    extra = section.get("extra", lambda v, p: dict(_Section(v, p, v).data), {})
    return ComponentConfig(classname=section.get("classname", _name), realm=realm, role=role,
                           extra=extra)


# -- transports ----------------------------------------------------------------------------

_WEBSOCKET_OPTIONS: dict[str, Parse] = {
    "auto_ping_interval": _number, "auto_ping_timeout": _number,
    "max_message_size": _integer(1), "allow_query_token": _boolean,
    "compression": _boolean, "open_handshake_timeout": _number}
# transport type -> the keys it takes
_TRANSPORT_KEYS = {
    "web": ("type", "endpoint", "paths"),
    "websocket": ("type", "endpoint", "serializers", "options", "auth"),
    "rawsocket": ("type", "endpoint", "serializers", "max_message_size", "auth")}


def _transport(value: Any, path: str, roles: Roles, base_dir: str | None) -> TransportConfig:
    kind = _type_of(value, path, tuple(_TRANSPORT_KEYS))
    section = _Section(value, path, _TRANSPORT_KEYS[kind])
    endpoint = section.get("endpoint", _endpoint)
    if kind == "web":
        return section.get("paths", lambda v, p: _web_paths(v, p, endpoint, roles, base_dir))
    fields = _wamp_fields(section, roles)
    if kind == "rawsocket":
        fields.update(section.pick({"max_message_size": _integer(1)}))
    return TransportConfig(type=kind, endpoint=endpoint, **fields)


def _endpoint(value: Any, path: str) -> Endpoint:
    section = _Section(value, path, ("type", "interface", "port"))
    section.get("type", _choice("tcp"), "tcp")
    return Endpoint(interface=section.get("interface", _name, "127.0.0.1"),
                    port=section.get("port", _integer(1, 65535)))


def _wamp_fields(section: _Section, roles: Roles) -> dict[str, Any]:
    """auth, serializers and options of a section serving WAMP, as TransportConfig kwargs."""
    fields = {"auth": section.get("auth", lambda v, p: _auth(v, p, roles))}
    fields.update(section.pick({
        "serializers": _items(_choice(*SERIALIZERS), "a non-empty list of serializers", True),
        "options": lambda v, p: _flat(WebSocketOptions, v, p, _WEBSOCKET_OPTIONS)}))
    _unique(fields.get("serializers", ()), lambda name: name, section.at("serializers"),
            "serializer")
    return fields


def _web_paths(value: Any, path: str, endpoint: Endpoint, roles: Roles,
               base_dir: str | None) -> TransportConfig:
    """A web transport from its paths: "/" (static, optional) and one websocket path."""
    if not isinstance(value, dict):
        raise ConfigError(path, "a mapping of paths", _describe(value))
    directory, websockets = None, []
    for key, entry in value.items():
        at = _join(path, key)
        if key == "/":
            static = _Section(entry, at, ("type", "directory"))
            static.get("type", _choice("static"))
            directory = static.get("directory", _name)
            if base_dir is not None:
                directory = os.path.normpath(os.path.join(base_dir, directory))
            continue
        if not isinstance(key, str) or not _PATH_SEGMENT.match(key):
            raise ConfigError(at, '"/" or a path segment such as ws', _describe(key))
        section = _Section(entry, at, ("type", "serializers", "options", "auth"))
        section.get("type", _choice("websocket"))
        websockets.append((key, _wamp_fields(section, roles)))
    if len(websockets) != 1:
        raise ConfigError(path, "exactly one path of type websocket", f"{len(websockets)}")
    ws_path, fields = websockets[0]
    return TransportConfig(type="web", endpoint=endpoint, web_directory=directory,
                           ws_path=ws_path, **fields)


# -- authentication ------------------------------------------------------------------------

def _auth(value: Any, path: str, roles: Roles) -> tuple[AuthMethodConfig, ...]:
    """The auth methods of a transport; roles they name must exist in some realm."""
    section = _Section(value, path, AUTH_TYPES)
    if not section.data:
        raise ConfigError(path, f"at least one of {', '.join(AUTH_TYPES)}", "an empty mapping")
    any_role = set().union(*roles.values())
    return tuple(_auth_method(method, entry, section.at(method), any_role)
                 for method, entry in section.data.items())


def _auth_method(method: str, value: Any, path: str, roles: set) -> AuthMethodConfig:
    kind = _type_of(value, path, AUTH_TYPES[method])
    role = lambda v, p: _known_role(roles, v, p)  # noqa: E731
    if kind == "keycloak":
        return AuthMethodConfig(method=method, type=kind, keycloak=_keycloak(value, path, role))
    if kind in ("dynamic", "function"):
        keys = ("type", "authenticator") + (("authenticator-realm",) if kind == "dynamic" else ())
        section = _Section(value, path, keys)
        return AuthMethodConfig(method=method, type=kind,
                                authenticator=section.get("authenticator", _name),
                                authenticator_realm=section.get("authenticator-realm", _name, None))
    if method == "anonymous":
        section = _Section(value, path, ("type", "role"))
        return AuthMethodConfig(method=method, type=kind, role=section.get("role", role))
    # Crossbar's spelling: ticket principals have a `ticket`, wampcra users a `secret`.
    key, secret_key, extra = (("principals", "ticket", {}) if method == "ticket" else
                              ("users", "secret", _CRA_EXTRA))
    section = _Section(value, path, ("type", key))
    principals = section.get(key, lambda v, p: _principals(v, p, secret_key, extra, role))
    return AuthMethodConfig(method=method, type=kind, principals=principals)


_CRA_EXTRA: dict[str, Parse] = {"salt": _name, "iterations": _integer(1), "keylen": _integer(1)}


def _principals(value: Any, path: str, secret_key: str, extra: Mapping[str, Parse],
                role: Parse) -> tuple[StaticPrincipal, ...]:
    """Static principals by authid; one whose secret is empty is disabled (left out)."""
    if not isinstance(value, dict):
        raise ConfigError(path, "a mapping of authid -> principal", _describe(value))
    principals = []
    for authid, entry in value.items():
        section = _Section(entry, _join(path, authid), ("role", secret_key, *extra))
        principal = StaticPrincipal(authid=_name(authid, section.path),
                                    role=section.get("role", role),
                                    secret=section.get(secret_key, _string), **section.pick(extra))
        if principal.secret:
            principals.append(principal)
    return tuple(principals)


def _keycloak(value: Any, path: str, role: Parse) -> KeycloakAuthConfig:
    """Keycloak settings; role_mapping must end with its catch-all, if it has one."""
    optional: dict[str, Parse] = {
        "jwks_url": _url, "jwks_ttl": _number, "min_refresh_interval": _number,
        "leeway": _number, "min_rsa_key_bits": _integer(2048),
        "algorithms": _items(_algorithm, "a non-empty list of algorithms", True),
        "role_mapping": _items(lambda v, p: _mapping_rule(v, p, role),
                               "a non-empty list of rules", True)}
    section = _Section(value, path, ("type", "issuer", "client_id", *optional))
    fields = section.pick(optional)
    for i, rule in enumerate(fields.get("role_mapping", ())[:-1]):
        if rule.role is None:      # the rules after it could never apply
            raise ConfigError(f"{section.at('role_mapping')}[{i}]",
                              "the catch-all rule (no role) to come last", "rules after it")
    return KeycloakAuthConfig(issuer=section.get("issuer", _url),
                              client_id=section.get("client_id", _name), **fields)


def _mapping_rule(value: Any, path: str, role: Parse) -> RoleMappingRule:
    section = _Section(value, path, ("role", "authrole"))
    return RoleMappingRule(authrole=section.get("authrole", role),
                           role=section.get("role", _name, None))


def _url(value: Any, path: str) -> str:
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        raise ConfigError(path, "an http(s) URL", _describe(value))
    return value


def _algorithm(value: Any, path: str) -> str:
    if isinstance(value, str) and (value.lower() == "none" or value.upper().startswith("HS")):
        raise ConfigError(path, "an asymmetric algorithm (none and HS* are refused)",
                          _describe(value))
    return _choice(*ALGORITHMS)(value, path)
