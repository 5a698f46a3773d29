"""WAMP ids: uniform over [1, 2**53], both ends included."""

from __future__ import annotations

import pytest

from wampchat.router import ids


@pytest.mark.parametrize("make", [ids.secure_id, ids.global_id])
def test_ids_are_in_range_and_do_not_repeat(make):
    drawn = [make() for _ in range(20000)]
    assert all(1 <= i <= ids.MAX_ID for i in drawn)
    assert len(set(drawn)) == len(drawn)


@pytest.mark.parametrize("make, source", [(ids.secure_id, "_secure"), (ids.global_id, "_fast")])
def test_the_lowest_and_highest_random_draws_are_the_ends_of_the_range(make, source, monkeypatch):
    for bits, expected in ((0, 1), (2 ** 53 - 1, ids.MAX_ID)):
        monkeypatch.setattr(getattr(ids, source), "getrandbits", lambda n, bits=bits: bits)
        assert make() == expected
