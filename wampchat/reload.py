"""SIGHUP: reload roles and permissions from the config file, keeping every session.

Only the realms' roles and permissions change at a reload; transports, limits,
components and the database need a restart (a reload that changes them says so).
Sessions stay; what a session's role may no longer hold (subscriptions,
registrations) is removed, and a session whose role is gone is ended.
"""

from __future__ import annotations

import signal
from typing import Callable

from wampchat.config import ConfigError, load_config
from wampchat.config_types import NodeConfig
from wampchat.logs import Logger
from wampchat.router.realm import Realm

log = Logger()


def apply_permissions(realms: dict[str, Realm], config: NodeConfig) -> None:
    """Give each running realm the roles and permissions it has in config."""
    configured = {realm.name: realm for realm in config.realms}
    for name in sorted(set(configured) ^ set(realms)):
        log.warn("reload: realm {realm} was added or removed in the file: that needs a restart",
                 realm=name)
    for name, realm in realms.items():
        if name in configured:
            report = realm.reload_permissions(configured[name])
            log.info("reload: realm {realm} has {roles} roles; removed {subscriptions} "
                     "subscriptions and {registrations} registrations, ended {ended} sessions",
                     realm=name, **report)


def reload_from_file(realms: dict[str, Realm], path: str,
                     load: Callable[[str], NodeConfig] = load_config) -> bool:
    """Reload permissions from path; on a bad file log why and keep the running ones."""
    try:
        config = load(path)
    except (ConfigError, OSError) as exc:
        log.error("reload of {path} refused, the running permissions stay: {error}",
                  path=path, error=str(exc))
        return False
    apply_permissions(realms, config)
    return True


def install_sighup(reactor, realms: dict[str, Realm], path: str) -> None:
    """Reload from path on SIGHUP (handled on the reactor thread)."""
    if not hasattr(signal, "SIGHUP"):
        return
    signal.signal(signal.SIGHUP, lambda signum, frame: reactor.callFromThread(
        reload_from_file, realms, path))
