"""wampchat.config: crossbar-like YAML + ${VAR:-default} -> frozen NodeConfig, or a ConfigError."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import yaml

from wampchat.config import ConfigError, load_config, parse_config
from wampchat.config_types import PermissionConfig, RoleMappingRule

SHIPPED = str(Path(__file__).resolve().parents[2] / "crossbar-like.yaml")

MINIMAL = {
    "version": 2,
    "workers": [{
        "type": "router",
        "realms": [{"name": "wampchat", "roles": [
            {"name": "user", "permissions": [{"uri": "chat.main", "match": "exact",
                                              "allow": {"subscribe": True}}]},
            {"name": "backend"}]}],
        "transports": [{
            "type": "websocket",
            "endpoint": {"type": "tcp", "port": 8080},
            "auth": {"ticket": {"type": "keycloak", "issuer": "http://kc/realms/wampchat",
                                "client_id": "wampchat"}},
        }],
    }],
}


def minimal() -> dict:
    """A fresh copy of the smallest valid configuration, for a test to break."""
    return copy.deepcopy(MINIMAL)


def worker(data: dict) -> dict:
    return data["workers"][0]


def error_of(data: dict, environ: dict | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        parse_config(data, environ or {})
    return caught.value


def rows(config, role: str) -> dict[str, PermissionConfig]:
    realm = config.realms[0]
    return {row.uri: row for row in next(r for r in realm.roles if r.name == role).permissions}


# -- the shipped file -----------------------------------------------------------------------

def test_shipped_file_parses_with_defaults():
    """Without environment the shipped file listens on 127.0.0.1:8080 with Keycloak defaults."""
    config = load_config(SHIPPED, environ={})
    [transport] = config.transports
    assert [realm.name for realm in config.realms] == ["wampchat"]
    assert (transport.type, transport.endpoint.interface, transport.endpoint.port) == \
        ("web", "127.0.0.1", 8080)
    assert transport.ws_path == "ws"
    assert transport.web_directory == os.path.join(os.path.dirname(SHIPPED), "web")
    assert transport.serializers == ("json", "msgpack", "cbor")
    ticket, wampcra = transport.auth
    assert (ticket.method, ticket.type) == ("ticket", "keycloak")
    assert ticket.keycloak.issuer == "http://127.0.0.1:8080/realms/wampchat"
    assert ticket.keycloak.client_id == "wampchat"
    assert ticket.keycloak.algorithms == ("RS256",)
    assert ticket.keycloak.role_mapping[-1] == RoleMappingRule(authrole="user", role=None)
    assert (wampcra.method, wampcra.type, wampcra.principals) == ("wampcra", "static", ())
    assert [(c.classname, c.realm, c.role) for c in config.components] == [
        ("wampchat.services.chat.ChatService", "wampchat", "backend"),
        ("wampchat.services.activity.ActivityService", "wampchat", "backend")]
    assert config.components[0].extra == {"leave_grace": 3}
    assert config.database.dsn is None
    assert config.source == SHIPPED


def test_shipped_file_takes_environment_overrides():
    """WAMPCHAT_PORT, KEYCLOAK_*, DATABASE_URL and the backend secret come from the environment."""
    config = load_config(SHIPPED, environ={
        "WAMPCHAT_PORT": "9999", "WAMPCHAT_INTERFACE": "0.0.0.0",
        "KEYCLOAK_REALM_URL": "https://sso.example.com/realms/chat", "KEYCLOAK_CLIENT_ID": "chat",
        "DATABASE_URL": "postgresql://db/wampchat", "WAMPCHAT_BACKEND_SECRET": "s3cret"})
    [transport] = config.transports
    assert (transport.endpoint.interface, transport.endpoint.port) == ("0.0.0.0", 9999)
    assert transport.auth[0].keycloak.issuer == "https://sso.example.com/realms/chat"
    assert transport.auth[0].keycloak.client_id == "chat"
    assert config.database.dsn == "postgresql://db/wampchat"
    [principal] = transport.auth[1].principals
    assert (principal.authid, principal.role, principal.secret) == ("chat-service", "backend", "s3cret")


def test_shipped_user_permissions():
    """`user`: subscribe chat.main and activity.on_status, publish chat.main, call rpc./history/refresh."""
    user = rows(load_config(SHIPPED, environ={}), "user")
    assert set(user) == {"chat.main", "activity.on_status", "rpc.", "chat.history",
                         "wampchat.session.refresh"}
    main = user["chat.main"]
    assert (main.publish, main.subscribe, main.call, main.register) == (True, True, False, False)
    assert main.disclose_publisher and main.max_payload == 16384
    assert user["activity.on_status"].subscribe and not user["activity.on_status"].publish
    assert user["rpc."].match == "prefix"
    for uri in ("rpc.", "chat.history", "wampchat.session.refresh"):
        assert (user[uri].call, user[uri].register, user[uri].disclose_caller) == (True, False, True)


def test_shipped_admin_and_backend_permissions():
    """`admin` is `user` plus chat.admin; `backend` may do everything on every URI."""
    config = load_config(SHIPPED, environ={})
    user, admin = rows(config, "user"), rows(config, "admin")
    assert {uri: row for uri, row in admin.items() if uri != "chat.admin"} == user
    chat_admin = admin["chat.admin"]
    assert (chat_admin.publish, chat_admin.subscribe, chat_admin.disclose_publisher) == \
        (True, True, True)
    [everything] = rows(config, "backend").values()
    assert (everything.uri, everything.match) == ("", "prefix")
    assert everything.call and everything.register and everything.publish and everything.subscribe
    assert everything.disclose_caller and everything.disclose_publisher


# -- environment substitution -----------------------------------------------------------------

@pytest.mark.parametrize("written, environ, port", [
    ("${P:-8081}", {}, 8081),
    ("${P:-8081}", {"P": "9000"}, 9000),
    ("${P:-8081}", {"P": ""}, 8081),            # as in the shell, empty takes the default
    ("${P}", {"P": "9001"}, 9001),
    ("90${P}", {"P": "02"}, 9002),
])
def test_variables_are_substituted_then_converted(written, environ, port):
    """${VAR} and ${VAR:-default} are replaced in strings, then converted to the field's type."""
    data = minimal()
    worker(data)["transports"][0]["endpoint"]["port"] = written
    assert parse_config(data, environ).transports[0].endpoint.port == port


def test_substitution_reaches_every_string():
    """Variables work in nested strings too, e.g. a realm name and a component's extra."""
    data = minimal()
    worker(data)["realms"][0]["name"] = "${REALM:-wampchat}"
    worker(data)["components"] = [{"type": "class", "classname": "x.Y", "realm": "wampchat",
                                   "extra": {"greeting": "hi ${WHO:-there}"}}]
    config = parse_config(data, {"WHO": "you"})
    assert config.components[0].extra == {"greeting": "hi you"}
    assert config.realms[0].name == "wampchat"


def test_unset_variable_without_default_names_the_key_and_the_variable():
    """${VAR} with VAR unset is refused, naming the key path and VAR."""
    data = minimal()
    worker(data)["transports"][0]["auth"]["ticket"]["client_id"] = "${KEYCLOAK_CLIENT_ID}"
    error = error_of(data)
    assert error.path == "workers[0].transports[0].auth.ticket.client_id"
    assert "KEYCLOAK_CLIENT_ID" in str(error)


def test_malformed_variable_reference_is_refused():
    """A `${` that is not ${VAR} or ${VAR:-default} is a typo, not a literal."""
    data = minimal()
    worker(data)["transports"][0]["endpoint"]["interface"] = "${WAMPCHAT INTERFACE}"
    assert error_of(data).path == "workers[0].transports[0].endpoint.interface"


@pytest.mark.parametrize("written, value", [("true", True), ("False", False), (True, True)])
def test_booleans_may_be_strings(written, value):
    """"true"/"false" (any case) become booleans, e.g. from ${ALLOW_QUERY_TOKEN:-false}."""
    data = minimal()
    worker(data)["transports"][0]["options"] = {"allow_query_token": written}
    assert parse_config(data, {}).transports[0].options.allow_query_token is value


# -- refusals ------------------------------------------------------------------------------------

def test_bad_match_names_the_exact_path():
    """A match policy other than exact/prefix/wildcard is refused at its path."""
    data = minimal()
    worker(data)["realms"][0]["roles"][0]["permissions"][0]["match"] = "regex"
    error = error_of(data)
    assert error.path == "workers[0].realms[0].roles[0].permissions[0].match"
    assert error.expected == "exact, prefix or wildcard"


def test_unknown_key_is_refused_with_the_allowed_keys():
    """A misspelt key is an error naming it and listing what is allowed there."""
    data = minimal()
    worker(data)["transports"][0]["endpoint"]["prot"] = 8080
    error = error_of(data)
    assert error.path == "workers[0].transports[0].endpoint.prot"
    assert "interface" in error.expected and "port" in error.expected


@pytest.mark.parametrize("port", ["abc", 0, 70000, "8080.5", True])
def test_bad_port_is_refused(port):
    """A port must be an integer 1-65535; the message has file, path, expectation and value."""
    data = minimal()
    worker(data)["transports"][0]["endpoint"]["port"] = port
    with pytest.raises(ConfigError) as caught:
        parse_config(data, {}, source="node.yaml")
    assert str(caught.value) == (f"node.yaml: workers[0].transports[0].endpoint.port: "
                                 f"expected an integer 1-65535, got {port!r}")


def test_missing_required_key_names_its_path():
    """A realm without a name is refused at workers[0].realms[0].name."""
    data = minimal()
    del worker(data)["realms"][0]["name"]
    assert error_of(data).path == "workers[0].realms[0].name"


@pytest.mark.parametrize("algorithm", ["none", "NONE", "HS256", "hs512"])
def test_none_and_hmac_algorithms_are_refused(algorithm):
    """Unsigned and HMAC tokens could be forged: such algorithms never pass the config."""
    data = minimal()
    worker(data)["transports"][0]["auth"]["ticket"]["algorithms"] = ["RS256", algorithm]
    error = error_of(data)
    assert error.path == "workers[0].transports[0].auth.ticket.algorithms[1]"


def test_keycloak_needs_issuer_and_serves_only_ticket():
    """A keycloak entry without issuer is refused, and keycloak cannot serve wampcra."""
    data = minimal()
    del worker(data)["transports"][0]["auth"]["ticket"]["issuer"]
    assert error_of(data).path == "workers[0].transports[0].auth.ticket.issuer"
    data = minimal()
    worker(data)["transports"][0]["auth"]["wampcra"] = {"type": "keycloak"}
    assert error_of(data).path == "workers[0].transports[0].auth.wampcra.type"


@pytest.mark.parametrize("place, path", [
    (lambda w: w.update(components=[{"type": "class", "classname": "x.Y", "realm": "wampchat",
                                     "role": "nobody"}]),
     "workers[0].components[0].role"),
    (lambda w: w["transports"][0]["auth"].update(wampcra={
        "type": "static", "users": {"svc": {"secret": "s", "role": "nobody"}}}),
     "workers[0].transports[0].auth.wampcra.users.svc.role"),
    (lambda w: w["transports"][0]["auth"]["ticket"].update(role_mapping=[{"authrole": "nobody"}]),
     "workers[0].transports[0].auth.ticket.role_mapping[0].authrole"),
])
def test_referenced_role_must_exist(place, path):
    """Roles named by components, static principals and role mapping must be defined."""
    data = minimal()
    place(worker(data))
    error = error_of(data)
    assert error.path == path
    assert "nobody" in str(error)


def test_principal_with_empty_secret_is_disabled():
    """A static principal whose secret is empty is left out, not an error."""
    data = minimal()
    worker(data)["transports"][0]["auth"]["wampcra"] = {"type": "static", "users": {
        "off": {"secret": "${UNSET_SECRET:-}", "role": "backend"},
        "on": {"secret": "s", "role": "backend", "salt": "salt", "iterations": "100"}}}
    [principal] = parse_config(data, {}).transports[0].auth[1].principals
    assert (principal.authid, principal.salt, principal.iterations) == ("on", "salt", 100)


def test_other_auth_types_and_a_rawsocket_transport():
    """anonymous/static, dynamic and function entries parse; rawsocket takes max_message_size."""
    data = minimal()
    worker(data)["transports"].append({
        "type": "rawsocket", "endpoint": {"port": "9000"}, "serializers": ["msgpack"],
        "max_message_size": 65536,
        "auth": {"anonymous": {"type": "static", "role": "user"},
                 "wampcra": {"type": "dynamic", "authenticator": "com.example.authenticate",
                             "authenticator-realm": "wampchat"},
                 "ticket": {"type": "function", "authenticator": "example.auth.authenticate"}}})
    transport = parse_config(data, {}).transports[1]
    assert (transport.type, transport.endpoint.port, transport.max_message_size) == \
        ("rawsocket", 9000, 65536)
    anonymous, dynamic, function = transport.auth
    assert (anonymous.type, anonymous.role) == ("static", "user")
    assert (dynamic.authenticator, dynamic.authenticator_realm) == \
        ("com.example.authenticate", "wampchat")
    assert (function.type, function.authenticator) == ("function", "example.auth.authenticate")


def test_realm_names_are_unique_and_at_least_one_realm_and_transport():
    """Duplicate realms, no realms, no transports: each refused at its path."""
    data = minimal()
    worker(data)["realms"].append({"name": "wampchat"})
    assert error_of(data).path == "workers[0].realms[1]"
    data = minimal()
    worker(data)["realms"] = []
    assert error_of(data).path == "workers[0].realms"
    data = minimal()
    worker(data)["transports"] = []
    assert error_of(data).path == "workers[0].transports"


def test_bad_serializer_and_misplaced_catch_all_are_refused():
    """Serializers are json/msgpack/cbor; a role-mapping rule after the catch-all is dead."""
    data = minimal()
    worker(data)["transports"][0]["serializers"] = ["json", "xml"]
    assert error_of(data).path == "workers[0].transports[0].serializers[1]"
    data = minimal()
    worker(data)["transports"][0]["auth"]["ticket"]["role_mapping"] = [
        {"authrole": "user"}, {"role": "wampchat-backend", "authrole": "backend"}]
    assert error_of(data).path == "workers[0].transports[0].auth.ticket.role_mapping[0]"


# -- files -----------------------------------------------------------------------------------------

def web_config(directory: str) -> dict:
    data = minimal()
    transport = worker(data)["transports"][0]
    ws = {"type": "websocket", "auth": transport.pop("auth")}
    transport.update(type="web", paths={"/": {"type": "static", "directory": directory}, "ws": ws})
    return data


def test_relative_web_directory_is_resolved_against_the_file(tmp_path, monkeypatch):
    """`directory: web` means <dir of the config file>/web, whatever the working directory."""
    (tmp_path / "conf").mkdir()
    path = tmp_path / "conf" / "node.yaml"
    path.write_text(yaml.safe_dump(web_config("web")))
    monkeypatch.chdir(tmp_path)
    [transport] = load_config(str(path), environ={}).transports
    assert transport.web_directory == str(tmp_path / "conf" / "web")
    path.write_text(yaml.safe_dump(web_config(str(tmp_path / "elsewhere"))))
    assert load_config(str(path), environ={}).transports[0].web_directory == \
        str(tmp_path / "elsewhere")


def test_empty_dsn_is_none_and_invalid_yaml_is_a_config_error(tmp_path):
    """dsn "" means no database configured; a YAML syntax error names the file."""
    data = minimal()
    data["database"] = {"dsn": "${DATABASE_URL:-}", "pool_size": "3"}
    database = parse_config(data, {}).database
    assert (database.dsn, database.pool_size) == (None, 3)
    path = tmp_path / "broken.yaml"
    path.write_text("version: 2\nworkers: [\n")
    with pytest.raises(ConfigError) as caught:
        load_config(str(path), environ={})
    assert str(caught.value).startswith(f"{path}: ")


def test_limits_parse_and_bad_limits_name_their_key():
    shipped = load_config(SHIPPED, environ={}).limits
    assert (shipped.message_rate, shipped.message_burst, shipped.rate_exempt_roles) == \
        (50.0, 200, ("backend",))
    assert (shipped.max_connections, shipped.max_connections_per_address) == (20000, 1000)
    assert (shipped.max_failed_logins_per_address, shipped.failed_login_block_seconds) == \
        (200, 30.0)
    data = minimal()
    data["limits"] = {"message_rate": "2.5", "rate_exempt_roles": ["backend", "admin"],
                      "max_subscriptions_per_session": 10}
    limits = parse_config(data, {}).limits
    assert (limits.message_rate, limits.rate_exempt_roles, limits.max_subscriptions_per_session) \
        == (2.5, ("backend", "admin"), 10)
    for key, value, path in [("max_connections", -1, "limits.max_connections"),
                             ("message_burst", 0, "limits.message_burst"),
                             ("rate_exempt_roles", "backend", "limits.rate_exempt_roles"),
                             ("rate_exempt_roles", [""], "limits.rate_exempt_roles[0]")]:
        data = minimal()
        data["limits"] = {key: value}
        assert error_of(data).path == path, key
