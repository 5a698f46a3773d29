"""`wampchat run|dev|check-config|migrate|component`: the command line (owns the reactor)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

import txaio
from twisted.logger import (FilteringLogObserver, LogLevel, LogLevelFilterPredicate,
                            globalLogBeginner, jsonFileLogObserver, textFileLogObserver)

import wampchat
from wampchat.config import ConfigError, load_config
from wampchat.config_types import NodeConfig
from wampchat.logs import Logger, drop_below

log = Logger()

DEFAULT_CONFIG = os.environ.get("WAMPCHAT_CONFIG", "crossbar-like.yaml")


def start_logging(level: str = "info", json_output: bool = False) -> None:
    """Send twisted.logger events to stdout, as text (or JSON lines for log shippers)."""
    observer = jsonFileLogObserver(sys.stdout) if json_output else textFileLogObserver(sys.stdout)
    chosen = LogLevel.levelWithName(level)
    predicate = LogLevelFilterPredicate(defaultLogLevel=chosen)
    globalLogBeginner.beginLoggingTo([FilteringLogObserver(observer, [predicate])],
                                     redirectStandardIO=False)
    drop_below(chosen)                   # below it, our loggers do not even build the event
    txaio.set_global_log_level(level)    # and Autobahn's are no-ops


def build_runtime(config: NodeConfig, reactor, extra_resources=None, dsn: str | None = None):
    """The node with its production dependencies (HTTP client for Keycloak, user store).

    dsn overrides the configured database (`wampchat dev`'s embedded server).
    """
    from wampchat.metrics import Metrics
    from wampchat.node import build_node
    from wampchat.runtime import MigrationService, keycloak_factory_for, user_services

    metrics = Metrics()
    users, services = user_services(config, reactor, dsn=dsn)
    factory = keycloak_factory_for(config, reactor, users, on_fetch=metrics.jwks_fetched)
    migrations = next((s.done for s in services if isinstance(s, MigrationService)), None)
    node = build_node(config, reactor, keycloak_factory=factory, extra_resources=extra_resources,
                      metrics=metrics, dsn=dsn, start_after=migrations)
    for service in services:
        if callable(getattr(service, "state", None)):      # the database pool
            metrics.watch_pool(service.state)
        service.setServiceParent(node.service)
    return node


def _load(path: str) -> NodeConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"wampchat: invalid configuration: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except OSError as exc:
        print(f"wampchat: cannot read {path}: {exc.strerror}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_check_config(args: argparse.Namespace) -> int:
    config = _load(args.config)
    realms = ", ".join(realm.name for realm in config.realms)
    transports = ", ".join(f"{t.type}@{t.endpoint.interface}:{t.endpoint.port}"
                           for t in config.transports)
    print(f"{args.config}: ok (realms: {realms}; transports: {transports})")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    config = _load(args.config)
    start_logging(args.log_level, args.log_json)
    from twisted.internet import task

    def main(reactor):
        from wampchat.reload import install_sighup
        from wampchat.runtime import tune_garbage_collection

        node = build_runtime(config, reactor)
        install_sighup(reactor, node.realms, args.config)
        reactor.addSystemEventTrigger("before", "shutdown", node.service.stopService)
        node.service.startService()
        tune_garbage_collection()
        return _until_stopped(reactor, node)

    task.react(main)
    return 0


def _until_stopped(reactor, node):
    """A Deferred that never fires: the node runs until SIGTERM/SIGINT stops the reactor.

    If a transport cannot listen, the failure stops the process with exit code 1.
    """
    from twisted.internet import defer

    def failed(failure):
        print(f"wampchat: {failure.getErrorMessage()}", file=sys.stderr)
        return failure

    readiness = defer.gatherResults([t.ready for t in node.transports], consumeErrors=True)
    readiness.addErrback(lambda f: failed(f.value.subFailure))
    readiness.addCallback(lambda _: defer.Deferred())
    return readiness


def cmd_dev(args: argparse.Namespace) -> int:
    from wampchat.dev.runner import run_dev

    config = _load(args.config)
    start_logging(args.log_level)
    return run_dev(config, data_dir=args.data_dir)


def cmd_migrate(args: argparse.Namespace) -> int:
    config = _load(args.config)
    dsn = args.dsn or config.database.dsn
    if not dsn:
        print("wampchat: no database: set database.dsn, DATABASE_URL or --dsn", file=sys.stderr)
        return 2
    from twisted.internet import task
    from twisted.internet.defer import ensureDeferred

    from wampchat.errors import AuthFailure
    from wampchat.users.migrate import MigrationFailed, run_migrations

    async def migrate(reactor):
        try:
            applied = await run_migrations(reactor, dsn,
                                           connect_timeout=config.database.connect_timeout)
        except (AuthFailure, MigrationFailed) as exc:
            print(f"wampchat: {exc}", file=sys.stderr)
            raise SystemExit(1) from None
        print(f"applied: {', '.join(applied)}" if applied else "database is up to date")

    task.react(lambda reactor: ensureDeferred(migrate(reactor)))
    return 0


def cmd_component(args: argparse.Namespace) -> int:
    from wampchat.component_runner import run as run_component

    start_logging(args.log_level)
    return run_component(args)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="wampchat", description=wampchat.__doc__)
    top.add_argument("--version", action="version", version=wampchat.__version__)
    commands = top.add_subparsers(dest="command", required=True)

    def with_config(sub):
        sub.add_argument("--config", "-c", default=DEFAULT_CONFIG,
                         help="node configuration (default: %(default)s)")
        return sub

    run = with_config(commands.add_parser("run", help="run a router node"))
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warn", "error"])
    run.add_argument("--log-json", action="store_true", help="log JSON lines instead of text")
    run.set_defaults(handler=cmd_run)
    dev = with_config(commands.add_parser(
        "dev", help="everything on one machine: router, embedded PostgreSQL, dev issuer"))
    dev.add_argument("--log-level", default="info", choices=["debug", "info", "warn", "error"])
    dev.add_argument("--data-dir", default=None,
                     help="keep the embedded database here (default: a throwaway directory)")
    dev.set_defaults(handler=cmd_dev)
    check = with_config(commands.add_parser("check-config", help="validate the configuration"))
    check.set_defaults(handler=cmd_check_config)
    migrate = with_config(commands.add_parser("migrate", help="apply database migrations"))
    migrate.add_argument("--dsn", help="PostgreSQL DSN (default: database.dsn of the config)")
    migrate.set_defaults(handler=cmd_migrate)
    component = commands.add_parser(
        "component", help="run a service session (ApplicationSession class) out of process")
    component.add_argument("classname", help="dotted path of the ApplicationSession subclass")
    component.add_argument("--url", required=True,
                           help="ws://host:port/ws, or rs://host:port (tcp://) for RawSocket")
    component.add_argument("--realm", required=True)
    component.add_argument("--extra", default=None, help="JSON object passed as config.extra")
    component.add_argument("--token-url", default=None,
                           help="token endpoint (default: $WAMPCHAT_TOKEN_URL)")
    component.add_argument("--log-level", default="info",
                           choices=["debug", "info", "warn", "error"])
    component.set_defaults(handler=cmd_component)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    raise SystemExit(main())
