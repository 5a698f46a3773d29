"""What start-up built is frozen out of later garbage collections, its garbage is not; full
collections come less often."""

from __future__ import annotations

import gc
import weakref

import pytest

from wampchat.runtime import FULL_COLLECTION_EVERY, tune_garbage_collection


class _Node:
    pass


@pytest.fixture
def unfrozen():
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()          # this test process goes on building nodes
    gc.set_threshold(*thresholds)


def test_freezing_keeps_live_objects_out_of_collections_and_collects_garbage_first(unfrozen):
    live = _Node()
    garbage = _Node()
    garbage.self = garbage                   # a cycle only the collector can free
    gone = weakref.ref(garbage)
    del garbage
    before = gc.get_freeze_count()
    tune_garbage_collection()
    assert gone() is None
    assert gc.get_freeze_count() > before
    assert all(o is not live for o in gc.get_objects())    # frozen: no longer tracked per generation


def test_full_collections_wait_for_more_younger_ones(unfrozen):
    young, middle, _ = gc.get_threshold()
    tune_garbage_collection()
    assert gc.get_threshold() == (young, middle, FULL_COLLECTION_EVERY)
    assert FULL_COLLECTION_EVERY > 10
