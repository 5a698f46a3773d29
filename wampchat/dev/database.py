"""A throwaway PostgreSQL for `wampchat dev` and the tests, and the choice between it and DATABASE_URL.

`EmbeddedPostgres` runs the server shipped in the `pgserver` wheel on a data
directory of its own, listening only on a Unix socket in that directory, so
several can run side by side and none ever collides with a real server on
5432. When the process runs as root (CI containers), pgserver itself creates a
system user `pgserver`, hands it the data directory and runs postgres as that
user, because postgres refuses to run as root.

Starting and stopping block for about a second (initdb, pg_ctl -w): call them
before the reactor runs, or from a test fixture. A stopped server keeps its
data and its DSN, so tests can take the database away and bring it back.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping

import psycopg2
from psycopg2.extensions import ISOLATION_LEVEL_AUTOCOMMIT, make_dsn, parse_dsn

from wampchat.logs import Logger

log = Logger()


class EmbeddedPostgres:
    """One local PostgreSQL server on a data directory, reached through `dsn`.

    `directory=None` uses a fresh temporary directory that `close()` deletes;
    a given directory (e.g. project-local `.wampchat/pgdata`) is kept, so its
    data survives restarts. `start()` initialises the directory when needed and
    returns the DSN (superuser `postgres`, database `postgres`, trust auth).
    """

    def __init__(self, directory: str | Path | None = None) -> None:
        self._owned_parent: Path | None = None     # temp dir we created and must delete
        if directory is None:
            self._owned_parent = Path(tempfile.mkdtemp(prefix="wampchat-pg-"))
            directory = self._owned_parent / "pgdata"
        self.pgdata = Path(directory).expanduser().resolve()
        self._server = None                         # pgserver.PostgresServer while running
        self.dsn: str | None = None

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> str:
        """Start the server (initialising the data directory on first use); returns the DSN."""
        # Imported here so only dev/test code pays for it. At import pgserver picks
        # its lock-file directory; without XDG_RUNTIME_DIR (CI, root) platformdirs
        # warns and falls back to /tmp/runtime-<uid>, which is fine.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
            import pgserver

        if self._server is None:
            self.pgdata.parent.mkdir(parents=True, exist_ok=True)
            self._server = pgserver.get_server(self.pgdata, cleanup_mode="stop")
            self.dsn = self._server.get_uri()
            log.info("embedded PostgreSQL running in {pgdata}", pgdata=str(self.pgdata))
        return self.dsn

    def stop(self) -> None:
        """Stop the server (fast shutdown: open connections are terminated); keeps the data."""
        if self._server is not None:
            server, self._server = self._server, None
            server.cleanup()    # cleanup_mode="stop": pg_ctl stop once our handle is the last one
            log.info("embedded PostgreSQL in {pgdata} stopped", pgdata=str(self.pgdata))

    def close(self) -> None:
        """Stop the server and delete its directory if it was a temporary one."""
        self.stop()
        if self._owned_parent is not None:
            shutil.rmtree(self._owned_parent, ignore_errors=True)
            self._owned_parent = None

    def __enter__(self) -> "EmbeddedPostgres":
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def configured_dsn(environ: Mapping[str, str] | None = None) -> str | None:
    """The DSN from DATABASE_URL, or None when it is unset or empty."""
    environ = os.environ if environ is None else environ
    return environ.get("DATABASE_URL") or None


@contextmanager
def database_dsn_for_tests(environ: Mapping[str, str] | None = None) -> Iterator[str]:
    """A PostgreSQL server for tests: DATABASE_URL when set, else an embedded one for the block.

    Yields a DSN with superuser rights (tests create and drop databases on it).
    """
    dsn = configured_dsn(environ)
    if dsn is not None:
        yield dsn
        return
    with EmbeddedPostgres() as server:
        yield server.dsn


@contextmanager
def scratch_database(server_dsn: str, prefix: str = "wampchat_test") -> Iterator[str]:
    """Create a database with a random name on `server_dsn`, yield its DSN, drop it after.

    Tests work in their own database so they never see, or leave behind, other data.
    """
    name = f"{prefix}_{secrets.token_hex(6)}"
    _admin(server_dsn, f'CREATE DATABASE "{name}"')
    try:
        yield make_dsn(server_dsn, dbname=name)
    finally:
        # FORCE (PostgreSQL 13+) ends connections a failed test may have left open.
        _admin(server_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _admin(server_dsn: str, statement: str) -> None:
    # Blocking on purpose: runs in fixtures, around the reactor rather than on it.
    # CREATE/DROP DATABASE cannot run in a transaction, hence autocommit.
    connection = psycopg2.connect(server_dsn)
    try:
        connection.set_isolation_level(ISOLATION_LEVEL_AUTOCOMMIT)
        with connection.cursor() as cursor:
            cursor.execute(statement)
    finally:
        connection.close()


def endpoint_description(dsn: str) -> str:
    """The server a DSN points at, as a Twisted client endpoint string (for a test proxy).

    ``unix:path=<dir>/.s.PGSQL.<port>`` for a Unix socket, else ``tcp:host=<h>:port=<p>``.
    """
    params = parse_dsn(dsn)
    host = params.get("host") or "/var/run/postgresql"
    port = int(params.get("port") or 5432)
    if host.startswith("/"):
        return f"unix:path={host}/.s.PGSQL.{port}"
    return f"tcp:host={host}:port={port}"
