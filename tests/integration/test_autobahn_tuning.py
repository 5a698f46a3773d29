"""Autobahn's debug-only formatting is deferred until a debug line is really written."""

from __future__ import annotations

import pprint

from autobahn import util as autobahn_util
from autobahn.twisted import websocket as autobahn_twisted_websocket
from autobahn.websocket import protocol as autobahn_websocket_protocol
from twisted.logger import formatEvent

import wampchat.transport.autobahn_tuning  # noqa: F401  (installs the changes)
from wampchat.transport.websocket import RouterWebSocketProtocol


def test_method_names_are_rendered_only_when_formatted(monkeypatch):
    calls = []
    real = autobahn_util.hltype
    monkeypatch.setattr(autobahn_util, "hltype", lambda obj: calls.append(obj) or real(obj))
    method = RouterWebSocketProtocol.onMessage
    for module in (autobahn_websocket_protocol, autobahn_twisted_websocket):
        lazy = module.hltype(method)
        assert calls == []
        text = formatEvent({"log_format": "{func}: request", "func": lazy})
        assert text == real(method) + ": request"
        assert "RouterWebSocketProtocol.onMessage" in text
        assert calls == [method]
        calls.clear()


def test_options_are_pretty_printed_only_when_formatted():
    options = {"openHandshakeTimeout": 5, "autoPingInterval": 10}
    lazy = autobahn_websocket_protocol.pformat(options)
    assert formatEvent({"log_format": "options {o}", "o": lazy}) == "options " + pprint.pformat(options)


def test_values_are_styled_only_when_formatted(monkeypatch):
    # The close reason of every connection is a Failure: rendering it costs microseconds.
    calls = []
    real = autobahn_util.hlval
    monkeypatch.setattr(autobahn_util, "hlval", lambda obj: calls.append(obj) or real(obj))
    for module in (autobahn_websocket_protocol, autobahn_twisted_websocket):
        lazy = module.hlval("tcp4:127.0.0.1:5000")
        assert calls == []
        text = formatEvent({"log_format": "peer {peer}", "peer": lazy})
        assert text == "peer " + real("tcp4:127.0.0.1:5000")
        assert calls == ["tcp4:127.0.0.1:5000"]
        calls.clear()


def test_batched_timer_calls_without_arguments_keep_the_callback_itself():
    from twisted.internet.task import Clock
    from txaio._common import _BatchedTimer

    from wampchat.transport.autobahn_tuning import lean_batched_timer

    clock = Clock()
    # what txaio.make_batched_timer builds, on a test clock
    timer = lean_batched_timer(_BatchedTimer(200.0, 1000, seconds_provider=clock.seconds,
                                             delayed_call_creator=clock.callLater))
    fired = []

    def ping():
        fired.append("ping")

    plain = timer.call_later(5, ping)
    assert plain._call is ping                 # no closure around it
    timer.call_later(5, fired.append, "with an argument")
    cancelled = timer.call_later(5, ping)
    cancelled.cancel()
    clock.advance(6)
    assert sorted(fired) == ["ping", "with an argument"]
