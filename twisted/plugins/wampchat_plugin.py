"""The `twistd wampchat` plugin: a ServiceMaker pointing at wampchat.tap.

This file is installed into Twisted's own `twisted/plugins/` directory (there is
deliberately no `twisted/__init__.py` or `twisted/plugins/__init__.py` here), so it
must stay tiny and import nothing of wampchat itself: Twisted imports every plugin
module whenever it looks for any plugin.
"""

from twisted.application.service import ServiceMaker

wampchat = ServiceMaker(
    "wampchat",
    "wampchat.tap",
    "A WAMP v2 router secured by Keycloak access tokens (reads crossbar-like.yaml).",
    "wampchat",
)
