"""wampchat.logs: events below the node's level are dropped where they are made."""

import subprocess
import sys

import pytest
from twisted.logger import LogLevel, Logger as TwistedLogger, globalLogPublisher

from wampchat import logs


@pytest.fixture
def events():
    seen = []
    globalLogPublisher.addObserver(seen.append)
    yield seen
    globalLogPublisher.removeObserver(seen.append)
    logs.drop_below(LogLevel.debug)


def _texts(seen):
    return [event.get("log_format") for event in seen if event.get("log_namespace") == "probe"]


def test_every_level_is_emitted_until_a_level_is_chosen(events):
    log = logs.Logger(namespace="probe")
    log.debug("d")
    log.info("i")
    log.warn("w")
    assert _texts(events) == ["d", "i", "w"]


def test_events_below_the_chosen_level_are_not_built(events, monkeypatch):
    built = []
    original = TwistedLogger.emit

    def counting_emit(self, level, format=None, **kwargs):
        built.append(level)
        return original(self, level, format, **kwargs)

    monkeypatch.setattr(TwistedLogger, "emit", counting_emit)
    logs.drop_below(LogLevel.warn)
    log = logs.Logger(namespace="probe")
    log.debug("d")
    log.info("i", user="someone")
    log.warn("w")
    log.error("e")
    log.critical("c")
    assert built == [LogLevel.warn, LogLevel.error, LogLevel.critical]
    assert _texts(events) == ["w", "e", "c"]
    logs.drop_below(LogLevel.debug)
    log.debug("again")
    assert _texts(events)[-1] == "again"


def test_the_command_line_level_gates_project_loggers():
    # start_logging in a process of its own: it takes over the global log observers.
    code = (
        "from twisted.logger import Logger as T, LogLevel\n"
        "calls = []\n"
        "original = T.emit\n"
        "T.emit = lambda self, level, *a, **k: (calls.append(level.name), original(self, level, *a, **k))\n"
        "from wampchat.cli import start_logging\n"
        "from wampchat.logs import Logger\n"
        "start_logging('warn')\n"
        "log = Logger(namespace='probe')\n"
        "log.info('hidden info')\n"
        "log.warn('shown warning')\n"
        "print('emitted', calls)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "shown warning" in done.stdout
    assert "hidden info" not in done.stdout
    assert "emitted ['warn']" in done.stdout
