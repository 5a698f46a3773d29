"""Authentication: the authenticator interface and its implementations."""
