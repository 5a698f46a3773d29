"""Fixtures for the router tests: a fresh harness per test."""

import pytest

from tests.router.harness import RouterHarness


@pytest.fixture
def router() -> RouterHarness:
    """A router with the default test realm, on its own clock."""
    return RouterHarness()
