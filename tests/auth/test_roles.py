"""roles.authrole_for: the ordered Keycloak role -> authrole mapping."""

from __future__ import annotations

import pytest

from wampchat.auth.roles import DEFAULT_ROLE_MAPPING, authrole_for
from wampchat.config_types import RoleMappingRule


@pytest.mark.parametrize("roles, authrole", [
    (["wampchat-backend"], "backend"),
    (["admin", "wampchat-backend"], "backend"),          # first rule wins, whatever the order held
    (["admin"], "admin"),
    (["ROLE_ADMIN", "user"], "admin"),
    (["user", "offline_access"], "user"),
    ([], "user"),
    (["Admin"], "user"),                                  # Keycloak role names are case-sensitive
])
def test_default_mapping(roles, authrole):
    """The shipped mapping: wampchat-backend -> backend, admin/ROLE_ADMIN -> admin, else user."""
    assert authrole_for(roles) == authrole
    assert authrole_for(roles, DEFAULT_ROLE_MAPPING) == authrole


def test_configured_order_and_no_catch_all():
    """A configured mapping is applied in order; without a catch-all, unmatched roles map to None."""
    mapping = (RoleMappingRule(authrole="moderator", role="mod"),
               RoleMappingRule(authrole="admin", role="admin"))
    assert authrole_for(["admin", "mod"], mapping) == "moderator"
    assert authrole_for(["admin"], mapping) == "admin"
    assert authrole_for(["user"], mapping) is None
