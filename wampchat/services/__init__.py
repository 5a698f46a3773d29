"""Backend services: ordinary WAMP sessions (authrole backend), in-process or out-of-process.

They use only WAMP (meta API, publish options, caller/publisher disclosure), never
router internals, so the same class runs attached over the memory transport or as
its own process over WebSocket/RawSocket.
"""
