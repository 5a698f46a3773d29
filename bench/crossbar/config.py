"""The Crossbar.io node config of the bench: the closest equivalent of wampchat's bench node.

Stdlib only (imported by bench/run.py in wampchat's venv, never by Crossbar).
"""

from __future__ import annotations

import json
from pathlib import Path

AUTHENTICATOR = "bench.crossbar.authenticator.create_authenticator"


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
                dsn: str, client_id: str, role_mapping: list[dict], pool_size: int = 5) -> dict:
    """Router worker: realm + roles, one web transport with /ws (ticket auth through the
    `function` authenticator, json and msgpack, no compression) and /healthz."""
    return {
        "version": 2,
        "controller": {},
        "workers": [{
            "type": "router",
            "realms": [{"name": realm, "roles": crossbar_roles(roles)}],
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
                        "auth": {"ticket": {
                            "type": "function", "create": AUTHENTICATOR,
                            "config": {"issuer": issuer, "jwks_url": jwks_url, "dsn": dsn,
                                       "client_id": client_id, "pool_size": pool_size,
                                       "leeway": 30, "min_refresh_interval": 10,
                                       "role_mapping": role_mapping},
                        }},
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
