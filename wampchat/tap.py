"""`twistd wampchat --config crossbar-like.yaml`: the same node as `wampchat run`."""

from __future__ import annotations

import os

from twisted.python import usage

DEFAULT_CONFIG = "crossbar-like.yaml"


class Options(usage.Options):
    """Command-line options of the twistd plugin."""

    optParameters = [
        ["config", "c", os.environ.get("WAMPCHAT_CONFIG", DEFAULT_CONFIG),
         "Path of the node configuration (crossbar-like.yaml)."],
    ]


def makeService(options: Options):
    """Parse the config and build the node's service (twistd starts it)."""
    from twisted.internet import reactor

    from wampchat.cli import build_runtime
    from wampchat.config import ConfigError, load_config

    try:
        config = load_config(options["config"])
    except (ConfigError, OSError) as exc:
        raise usage.UsageError(str(exc)) from None
    from wampchat.reload import install_sighup

    from wampchat.runtime import tune_garbage_collection

    node = build_runtime(config, reactor)
    install_sighup(reactor, node.realms, options["config"])
    reactor.callWhenRunning(tune_garbage_collection)     # twistd starts the service first
    return node.service
