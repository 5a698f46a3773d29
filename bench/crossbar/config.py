"""The Crossbar.io node config of the bench: the closest equivalent of wampchat's bench node.

Stdlib only (imported by bench/run.py in wampchat's venv, never by Crossbar).
"""

from __future__ import annotations

import json
from pathlib import Path

AUTHENTICATOR = "bench.crossbar.authenticator.create_authenticator"
COMPONENT = "bench.crossbar.authenticator.AuthenticatorComponent"
PROCEDURE = "bench.authenticate"


def crossbar_roles(roles: list[dict]) -> list[dict]:
    """The bench roles in Crossbar's shape; `cache: true` lets Crossbar cache authorizations
    (its best case, as wampchat caches per (role, URI))."""
    return [{"name": role["name"],
             "permissions": [{"uri": p["uri"], "match": p["match"],
                              "allow": {k: bool(p["allow"].get(k)) for k in
                                        ("call", "register", "publish", "subscribe")},
                              "disclose": {"caller": bool(p["disclose"].get("caller")),
                                           "publisher": bool(p["disclose"].get("publisher"))},
                              "cache": True}
                             for p in role["permissions"]]}
            for role in roles]


def node_config(port: int, realm: str, roles: list[dict], issuer: str, jwks_url: str,
                dsn: str, client_id: str, role_mapping: list[dict], pool_size: int = 5,
                auth: str = "function") -> dict:
    """Router worker: realm + roles, one web transport with /ws (ticket auth, json and
    msgpack, no compression) and /healthz.

    auth "function" (the default): Crossbar calls the authenticator in the router worker,
    in-process, as wampchat validates tokens in-process: the fairest peer. auth "dynamic":
    the same authenticator registered as a WAMP procedure by a component in the router
    worker, which Crossbar calls per login (its other documented way).
    """
    settings = {"issuer": issuer, "jwks_url": jwks_url, "dsn": dsn, "client_id": client_id,
                "pool_size": pool_size, "leeway": 30, "min_refresh_interval": 10,
                "role_mapping": role_mapping}
    if auth == "function":
        ticket = {"type": "function", "create": AUTHENTICATOR, "config": settings}
        components, extra_roles = [], []
    elif auth == "dynamic":
        ticket = {"type": "dynamic", "authenticator": PROCEDURE}
        components = [{"type": "class", "classname": COMPONENT, "realm": realm,
                       "role": "authenticator", "extra": settings}]
        extra_roles = [{"name": "authenticator", "permissions": [
            {"uri": PROCEDURE, "match": "exact", "allow": {"register": True},
             "disclose": {"caller": False, "publisher": False}, "cache": True}]}]
    else:
        raise ValueError(f"unknown Crossbar authenticator type {auth!r}")
    return {
        "version": 2,
        "controller": {},
        "workers": [{
            "type": "router",
            "realms": [{"name": realm, "roles": crossbar_roles(roles) + extra_roles}],
            "components": components,
            "transports": [{
                "type": "web",
                "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": port,
                             "backlog": 1024},
                "paths": {
                    "ws": {
                        "type": "websocket",
                        "serializers": ["json", "msgpack"],
                        "options": {"auto_ping_interval": 10000, "auto_ping_timeout": 5000,
                                    "max_message_size": 1048576},
                        "auth": {"ticket": ticket},
                    },
                    "healthz": {"type": "json", "value": "ok"},
                },
            }],
        }],
    }


def write_cbdir(directory: Path, config: dict) -> Path:
    """A Crossbar node directory holding config.json; returns the directory."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    return directory
