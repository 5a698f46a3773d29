"""What start-up built is frozen out of later garbage collections; its garbage is not."""

from __future__ import annotations

import gc
import weakref

import pytest

from wampchat.runtime import freeze_startup_objects


class _Node:
    pass


@pytest.fixture
def unfrozen():
    yield
    gc.unfreeze()          # this test process goes on building nodes


def test_freezing_keeps_live_objects_out_of_collections_and_collects_garbage_first(unfrozen):
    live = _Node()
    garbage = _Node()
    garbage.self = garbage                   # a cycle only the collector can free
    gone = weakref.ref(garbage)
    del garbage
    before = gc.get_freeze_count()
    freeze_startup_objects()
    assert gone() is None
    assert gc.get_freeze_count() > before
    assert all(o is not live for o in gc.get_objects())    # frozen: no longer tracked per generation
