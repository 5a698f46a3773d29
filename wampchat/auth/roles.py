"""Keycloak roles -> one WAMP authrole, by an ordered mapping (SPEC §3 item 5).

The first rule whose Keycloak role the token carries wins; a rule without a role
is the catch-all. Order matters: ``wampchat-backend`` before ``admin`` before the
default, so a service account is never mistaken for a user.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Iterable, Sequence

from wampchat.config_types import KeycloakAuthConfig, RoleMappingRule

# The mapping of the shipped configuration (KeycloakAuthConfig's default).
DEFAULT_ROLE_MAPPING: tuple[RoleMappingRule, ...] = next(
    f.default for f in fields(KeycloakAuthConfig) if f.name == "role_mapping")


def authrole_for(roles: Iterable[str], mapping: Sequence[RoleMappingRule] = DEFAULT_ROLE_MAPPING,
                 ) -> str | None:
    """The authrole of the first rule that matches roles; None if no rule does.

    Role names compare exactly (Keycloak role names are case-sensitive).
    """
    held = set(roles)
    for rule in mapping:
        if rule.role is None or rule.role in held:
            return rule.authrole
    return None
