"""The benchmarks: `python -m bench.run` (wampchat, Crossbar.io and the raw Autobahn transport
side by side), `bench.auth` (local JWKS validation vs introspection), `bench.logins` (JIT
users and database round trips) and `bench.stress` (limits, floods, faults)."""
