"""The WAMP router: realms, sessions, broker, dealer, authorization, meta API."""
