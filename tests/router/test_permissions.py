"""Permissions (most specific row decides, unknown URIs denied) and PublishFilter, as tables."""

from types import SimpleNamespace

import pytest

import wampchat  # noqa: F401
from autobahn.wamp import message

from tests.router.harness import DEFAULT_REALM
from wampchat.config_types import PermissionConfig as P, RoleConfig
from wampchat.router.permissions import DENY, Permission, Permissions
from wampchat.router.publish_filter import PublishFilter

TABLE = Permissions(DEFAULT_REALM.roles)


@pytest.mark.parametrize("authrole, uri, action, allowed", [
    ("user", "chat.main", "subscribe", True),
    ("user", "chat.main", "publish", True),
    ("user", "chat.main", "register", False),
    ("user", "chat.admin", "subscribe", False),     # exact row beats the chat. prefix
    ("user", "chat.admin", "publish", False),
    ("user", "chat.other", "subscribe", True),      # the chat. prefix
    ("user", "chat.other", "publish", False),
    ("user", "rpc.activity.set_status", "call", True),
    ("user", "rpc.activity.set_status", "register", False),
    ("user", "wamp.session.list", "call", False),   # nothing matches: denied
    ("user", "wampchat.session.refresh", "call", True),
    ("admin", "chat.admin", "subscribe", True),
    ("admin", "chat.admin", "publish", True),
    ("admin", "chat.main", "publish", True),
    ("backend", "wamp.session.list", "call", True),
    ("backend", "anything.at.all", "register", True),
    ("ghost", "chat.main", "subscribe", False),     # unknown role: denied
])
def test_check_allows_exactly_what_the_deciding_row_allows(authrole, uri, action, allowed):
    """check() returns the deciding row when it allows the action, else None."""
    assert (TABLE.check(authrole, uri, action) is not None) is allowed


@pytest.mark.parametrize("authrole, uri, disclose_publisher, disclose_caller", [
    ("user", "chat.main", True, False),
    ("user", "news.sports", False, False),
    ("user", "rpc.x", False, True),
    ("backend", "chat.main", True, True),
    ("backend", "news.sports", False, False),
])
def test_lookup_returns_the_disclosure_of_the_deciding_row(authrole, uri, disclose_publisher,
                                                           disclose_caller):
    """The deciding row carries the disclosure flags the broker and dealer use."""
    row = TABLE.lookup(authrole, uri)
    assert (row.disclose_publisher, row.disclose_caller) == (disclose_publisher, disclose_caller)


def test_lookup_of_an_unmatched_uri_is_deny():
    """A URI that no row matches gets the all-false DENY row."""
    assert TABLE.lookup("user", "nothing.here") is DENY
    assert not any(DENY.allows(action) for action in ("call", "register", "publish", "subscribe"))


def test_wildcard_rows_and_max_payload():
    """Wildcard rows match per component and carry max_payload."""
    row = P("room..msg", "wildcard", publish=True, max_payload=10)
    table = Permissions([RoleConfig("r", (row,))])
    assert table.check("r", "room.42.msg", "publish") == Permission(publish=True, max_payload=10)
    assert table.check("r", "room.42.other", "publish") is None
    assert table.has_role("r") and not table.has_role("user")
    assert table.roles == ("r",)


def session(session_id, authid="a", authrole="user"):
    """A stand-in with the three attributes a PublishFilter reads."""
    return SimpleNamespace(id=session_id, authid=authid, authrole=authrole)


ALICE, BOB, ADMIN = session(1, "alice"), session(2, "bob"), session(3, "carol", "admin")


@pytest.mark.parametrize("options, admitted", [
    ({}, [2, 3]),                                            # exclude_me defaults to true
    ({"exclude_me": False}, [1, 2, 3]),
    ({"exclude_me": True}, [2, 3]),
    ({"exclude": [2]}, [3]),
    ({"exclude_authid": ["carol"]}, [2]),
    ({"exclude_authrole": ["user"], "exclude_me": False}, [3]),
    ({"eligible": [1, 2], "exclude_me": False}, [1, 2]),
    ({"eligible_authid": ["bob", "carol"]}, [2, 3]),
    ({"eligible_authrole": ["admin"]}, [3]),
    ({"eligible": [2, 3], "exclude": [3]}, [2]),             # exclusion wins
    ({"eligible": [2, 3], "eligible_authrole": ["admin"]}, [3]),  # every eligible list narrows
    ({"eligible": []}, []),
])
def test_publish_filter_admits_per_options(options, admitted):
    """PublishFilter applies exclude_me, exclude*, eligible* as the WAMP spec defines."""
    publish = message.Publish(1, "chat.main", **options)
    publish_filter = PublishFilter.from_publish(publish, publisher_id=ALICE.id)
    assert [s.id for s in (ALICE, BOB, ADMIN) if publish_filter.admits(s)] == admitted
