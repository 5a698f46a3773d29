"""wampchat: a WAMP v2 router on Twisted and Autobahn|Python, secured by Keycloak."""

import txaio

# Autobahn's shared code needs its framework chosen before any of it is used.
txaio.use_twisted()

__version__ = "0.1.0"
