"""The roles and features the router announces in WELCOME: one source of truth.

Only what the broker and dealer implement is listed; tests check each feature here
against behaviour.
"""

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
