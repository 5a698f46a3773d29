"""The benchmark: `python -m bench.run` (router vs the raw Autobahn ceiling)."""
