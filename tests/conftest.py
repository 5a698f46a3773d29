"""Shared test set-up: Autobahn's txaio must be on Twisted before anything imports it."""

import wampchat  # noqa: F401  (selects txaio's Twisted framework)
