"""Just-in-time users: the store seam, PostgreSQL behind it, and the cached directory in front.

Import the pool from wampchat.users.pool, the store from wampchat.users.postgres
and migrations from wampchat.users.migrate; the names here are what the
authenticator needs.
"""

from wampchat.users.directory import UserDirectory, authid_of
from wampchat.users.store import EmailInUse, MemoryUserStore, User, UserStore, email_taken_message

__all__ = ["EmailInUse", "MemoryUserStore", "User", "UserDirectory", "UserStore",
           "authid_of", "email_taken_message"]
