"""Crossbar.io as the peer in the benchmark: its node config and its ticket authenticator.

Nothing here is imported by wampchat; `authenticator.py` runs inside Crossbar's router
worker, in the separate venv `bench/.crossbar-venv` that `make bench` creates.
"""
