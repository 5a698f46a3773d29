"""Autobahn|JS (Node) against the router: every serializer, with a Python callee.

The router runs in-process (build_node from a parsed config, static ticket auth) on
a free port of 127.0.0.1; a Python Autobahn session registers `com.py.echo`, then
tests/js/interop.js registers, subscribes, publishes and calls through it and prints
one JSON line with what it saw. Node is required: without it these tests fail.
"""

from __future__ import annotations

import json
import resource
import shutil
from dataclasses import replace

import pytest
import pytest_twisted

from wampchat.config import parse_config
from wampchat.node import build_node

from .processes import (PRINCIPALS, REALM, REPO, Clients, child_env, node_config, reactor,
                        run_process, within)

SCRIPT = REPO / "tests" / "js" / "interop.js"
NODE_TIMEOUT = 30.0


def _node_binary() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail("the `node` executable (Node.js >= 20) is not on PATH: the Autobahn|JS "
                    "interop tests need it (and `npm install` for node_modules/autobahn)")
    if not (REPO / "node_modules" / "autobahn").is_dir():
        pytest.fail(f"{REPO / 'node_modules' / 'autobahn'} is missing: run `npm install` in {REPO}")
    return node


def _memory_cap_flags() -> list[str]:
    """Under `ulimit -v`, V8 cannot reserve WebAssembly's guard regions (undici, hence
    Node's WebSocket, instantiates llhttp as Wasm): use bounds checks instead."""
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    return [] if soft == resource.RLIM_INFINITY else ["--disable-wasm-trap-handler"]


@pytest_twisted.async_yield_fixture
async def router():
    """The node, listening on 127.0.0.1 (web transport first); stopped at teardown."""
    config = parse_config(node_config(1, 2), environ={})
    # The file format wants a real port; listen on port 0 (a free one) instead.
    config = replace(config, transports=tuple(
        replace(t, endpoint=replace(t.endpoint, port=0)) for t in config.transports))
    node = build_node(config, reactor())
    node.service.startService()
    try:
        await within(node.transports[0].ready)
        await within(node.transports[1].ready)
        yield node
    finally:
        if node.service.running:
            await within(node.service.stopService(), 10.0)


@pytest_twisted.async_yield_fixture
async def clients():
    opened = Clients()
    yield opened
    await opened.close()


@pytest.mark.parametrize("serializer", ["json", "msgpack", "cbor"])
@pytest.mark.parametrize("authid", ["alice", "svc"])
@pytest_twisted.ensureDeferred
async def test_autobahn_js_interop(router, clients, serializer, authid):
    node = _node_binary()
    port = router.port_of(0)
    callee = await clients.websocket(port, "svc", "s3cret", "json")
    calls = []

    def echo(*args, **kwargs):
        calls.append((args, kwargs))
        return "py:" + args[0]

    await within(callee.register(echo, "com.py.echo"))

    url = f"ws://127.0.0.1:{port}/ws"
    argv = [node, "--experimental-websocket", *_memory_cap_flags(), str(SCRIPT), url, REALM,
            authid, PRINCIPALS[authid]["ticket"], serializer]
    out, err, code = await run_process(argv, timeout=NODE_TIMEOUT, cwd=str(REPO),
                                       env=child_env())
    lines = [line for line in out.splitlines() if line.strip()]
    assert lines, f"no output from interop.js (exit {code}); stderr:\n{err}"
    report = json.loads(lines[-1])
    assert code == 0, (report, err)
    assert "error" not in report, (report, err)
    assert report["authrole"] == PRINCIPALS[authid]["role"]
    assert report["event"] == {"args": ["hello"], "kwargs": {"n": 1}}
    assert report["add"] == 5
    assert report["echo"] == "py:from js"
    assert report["missing"] == "wamp.error.no_such_procedure"
    assert calls == [(("from js",), {})]
