"""The roles and features the router announces in WELCOME: one source of truth.

Only what the broker and dealer implement is listed; tests check each feature here
against behaviour.
"""

from typing import Any

from autobahn.wamp import message
from autobahn.wamp.role import RoleBrokerFeatures, RoleDealerFeatures

BROKER_FEATURES = {
    "pattern_based_subscription": True,
    "publisher_exclusion": True,
    "subscriber_blackwhite_listing": True,
    "publisher_identification": True,
    "subscription_meta_api": True,
    "session_meta_api": True,
}

DEALER_FEATURES = {
    "pattern_based_registration": True,
    "shared_registration": True,
    "caller_identification": True,
    "progressive_call_results": True,
    "call_canceling": True,
    "call_timeout": True,
    "registration_meta_api": True,
    "session_meta_api": True,
}


def router_roles() -> dict:
    """WELCOME.Details.roles, as Autobahn role-feature objects."""
    return {
        "broker": RoleBrokerFeatures(**BROKER_FEATURES),
        "dealer": RoleDealerFeatures(**DEALER_FEATURES),
    }


# The same roles for every session: built, and marshalled for the wire, once.
_ROLES = router_roles()
_WIRE_ROLES: dict[str, Any] = message.Welcome(1, _ROLES).marshal()[2]["roles"]


class RouterWelcome(message.Welcome):
    """WELCOME with the router's roles, marshalled once per process instead of per session
    (Autobahn walks every role object's features for each WELCOME: a quarter of its cost)."""

    def __init__(self, session: int, **details: Any) -> None:
        super().__init__(session, _ROLES, **details)

    def marshal(self) -> list:
        self.roles = {}                      # Autobahn's marshal walks none of them...
        try:
            raw = super().marshal()
        finally:
            self.roles = _ROLES
        raw[2]["roles"] = _WIRE_ROLES        # ...and the ones marshalled at import go out
        return raw
