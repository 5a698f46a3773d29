"""The URIs wampchat adds to WAMP's own, and the exception types that carry them.

Standard WAMP URIs come from Autobahn's ``ApplicationError``; these are ours.
"""

from autobahn.wamp.exception import ApplicationError

# Request errors (ERROR.Error)
UNAVAILABLE = "wampchat.error.unavailable"
INVALID_STATUS = "wampchat.error.invalid_status"
PAYLOAD_TOO_LARGE = "wampchat.error.payload_too_large"
RATE_LIMITED = "wampchat.error.rate_limited"
LIMIT_EXCEEDED = "wampchat.error.limit_exceeded"

# Close reasons (GOODBYE.Reason / ABORT.Reason)
CLOSE_TOKEN_EXPIRED = "wampchat.close.token_expired"
CLOSE_LOGGED_OUT = "wampchat.close.logged_out"
CLOSE_SLOW_CONSUMER = "wampchat.close.slow_consumer"
CLOSE_SYSTEM_SHUTDOWN = "wamp.close.system_shutdown"
CLOSE_NORMAL = "wamp.close.normal"
CLOSE_KILLED = "wamp.close.killed"
CLOSE_TIMEOUT = "wampchat.close.timeout"
GOODBYE_AND_OUT = "wamp.close.goodbye_and_out"

# Standard URIs used throughout, named once.
PROTOCOL_VIOLATION = "wamp.error.protocol_violation"
NO_SUCH_REALM = ApplicationError.NO_SUCH_REALM
NO_SUCH_ROLE = ApplicationError.NO_SUCH_ROLE
NOT_AUTHORIZED = ApplicationError.NOT_AUTHORIZED
AUTHENTICATION_FAILED = ApplicationError.AUTHENTICATION_FAILED
NO_AUTH_METHOD = ApplicationError.NO_AUTH_METHOD
NO_SUCH_PROCEDURE = ApplicationError.NO_SUCH_PROCEDURE
NO_SUCH_SUBSCRIPTION = ApplicationError.NO_SUCH_SUBSCRIPTION
NO_SUCH_REGISTRATION = ApplicationError.NO_SUCH_REGISTRATION
NO_SUCH_SESSION = ApplicationError.NO_SUCH_SESSION
PROCEDURE_ALREADY_EXISTS = ApplicationError.PROCEDURE_ALREADY_EXISTS
PROCEDURE_EXISTS_INVOCATION_POLICY_CONFLICT = ApplicationError.PROCEDURE_EXISTS_INVOCATION_POLICY_CONFLICT
INVALID_URI = ApplicationError.INVALID_URI
INVALID_ARGUMENT = ApplicationError.INVALID_ARGUMENT
CANCELED = ApplicationError.CANCELED
TIMEOUT = ApplicationError.TIMEOUT
RUNTIME_ERROR = "wamp.error.runtime_error"
OPTION_NOT_ALLOWED = "wamp.error.option_not_allowed"


class AuthFailure(Exception):
    """A refused login. `reason` is short and stable; the text says more.

    The session turns it into one ABORT with `uri` and the message
    ``"<reason>: <text>"``. The text never contains the token.
    """

    uri = AUTHENTICATION_FAILED
    reason = "invalid_token"
    retryable = False

    def message(self) -> str:
        text = str(self)
        return f"{self.reason}: {text}" if text else self.reason


class NoAuthMethod(AuthFailure):
    uri = NO_AUTH_METHOD
    reason = "no_auth_method"


class BadCredentials(AuthFailure):
    reason = "bad_credentials"


class RoleRefused(AuthFailure):
    uri = NOT_AUTHORIZED
    reason = "role_not_allowed"


class Unavailable(AuthFailure):
    """Keycloak (with no cached key) or the database is down: try again later."""

    uri = UNAVAILABLE
    reason = "unavailable"
    retryable = True


class RequestError(Exception):
    """A request refused with a WAMP ERROR: `uri`, and a human-readable text."""

    def __init__(self, uri: str, text: str | None = None) -> None:
        super().__init__(text or uri)
        self.uri = uri
        self.text = text
