"""The session state machine: handshake, refusals, protocol violations, timeouts, expiry."""

import pytest
import wampchat  # noqa: F401
from autobahn.wamp import message

from tests.router.harness import LEEWAY, REALM, RouterHarness, ticket_for
from wampchat.config_types import LimitsConfig
from wampchat.router import features
from wampchat.router.ids import MAX_ID


def test_unknown_realm_is_aborted(router):
    """HELLO for a realm the router does not serve gets ABORT wamp.error.no_such_realm."""
    client = router.connect(ticket_for("user", "alice"), realm="elsewhere")
    assert [type(m) for m in client.messages] == [message.Abort]
    assert client.last.reason == "wamp.error.no_such_realm"
    router.pump()
    assert not client.is_open and client.closed


def test_no_acceptable_authmethod_is_aborted(router):
    """HELLO offering only methods the transport does not serve gets ABORT no_auth_method."""
    client = router.connect(ticket_for("user", "alice"), authmethods=["wampcra"])
    assert client.last.reason == "wamp.error.no_auth_method"
    assert not client.is_open


def test_challenge_then_authenticate_gives_welcome(router):
    """ticket: CHALLENGE, AUTHENTICATE, then WELCOME with the identity the authenticator chose."""
    client = router.connect(ticket_for("admin", "carol"))
    assert [m.MESSAGE_TYPE for m in client.messages] == [message.Challenge.MESSAGE_TYPE,
                                                         message.Welcome.MESSAGE_TYPE]
    assert client.messages[0].method == "ticket"
    welcome = client.welcome
    assert (welcome.realm, welcome.authid, welcome.authrole, welcome.authmethod,
            welcome.authprovider) == (REALM, "carol", "admin", "ticket", "test")
    assert client.is_open


def test_welcome_announces_exactly_the_implemented_features(router):
    """WELCOME.Details.roles lists the broker and dealer features of features.py, nothing else."""
    details = router.join().welcome.marshal()[2]
    assert details["roles"] == {
        "broker": {"features": features.BROKER_FEATURES},
        "dealer": {"features": features.DEALER_FEATURES},
    }


def test_session_ids_differ_and_are_in_range(router):
    """Every welcomed session gets its own id in [1, 2**53]."""
    ids = [router.join().session_id for _ in range(20)]
    assert len(set(ids)) == len(ids)
    assert all(1 <= session_id <= MAX_ID for session_id in ids)
    assert set(router.realm.sessions) == set(ids)


def test_message_before_hello_is_a_protocol_violation(router):
    """SUBSCRIBE before HELLO gets ABORT wamp.error.protocol_violation and the transport closes."""
    client = router.connect(say_hello=False)
    client.send(message.Subscribe(1, "chat.main"))
    router.pump()
    assert [type(m) for m in client.messages] == [message.Abort]
    assert client.last.reason == "wamp.error.protocol_violation"
    assert not client.is_open and client.closed


def test_authenticate_without_challenge_is_a_protocol_violation(router):
    """AUTHENTICATE in state NEW is a protocol violation (ABORT)."""
    client = router.connect(say_hello=False)
    client.send(message.Authenticate("role:user:alice"))
    router.pump()
    assert client.last.reason == "wamp.error.protocol_violation"
    assert not client.is_open


def test_second_hello_after_welcome_is_a_protocol_violation(router):
    """HELLO after WELCOME gets GOODBYE wamp.error.protocol_violation and the session ends."""
    client = router.join()
    client.send(message.Hello(REALM, client.roles, authmethods=["ticket"]))
    router.pump()
    assert isinstance(client.last, message.Goodbye)
    assert client.last.reason == "wamp.error.protocol_violation"
    assert not client.is_open
    assert router.realm.sessions == {}


def test_messages_a_router_never_receives_are_protocol_violations(router):
    """EVENT, RESULT or WELCOME from a client gets GOODBYE protocol_violation."""
    for bogus in (message.Event(1, 2, args=["x"]), message.Result(1, args=[1]),
                  message.Welcome(1, features.router_roles())):
        client = router.join()
        client.send(bogus)
        router.pump()
        goodbyes = client.received(message.Goodbye)
        assert [g.reason for g in goodbyes] == ["wamp.error.protocol_violation"], bogus
        assert not client.is_open


def test_a_violation_does_not_disturb_other_sessions(router):
    """One session's protocol violation leaves the others subscribed and receiving."""
    alice, bob, carol = router.join(), router.join(), router.join()
    bob.subscribe("chat.main")
    alice.send(message.Result(1, args=[1]))
    carol.send(message.Publish(1, "chat.main", args=["still here"], acknowledge=True))
    router.pump()
    assert not alice.is_open
    assert [e.args for e in bob.received(message.Event)] == [["still here"]]
    assert isinstance(carol.last, message.Published)
    assert bob.is_open and carol.is_open
    assert set(router.realm.sessions) == {bob.session_id, carol.session_id}


def test_client_goodbye_is_answered_and_the_session_ends(router):
    """Client GOODBYE gets GOODBYE wamp.close.goodbye_and_out; the session leaves the realm."""
    client = router.join()
    client.send(message.Goodbye("wamp.close.normal"))
    router.pump()
    assert isinstance(client.last, message.Goodbye)
    assert client.last.reason == "wamp.close.goodbye_and_out"
    assert len(client.received(message.Goodbye)) == 1
    assert not client.is_open
    assert router.realm.sessions == {}


def test_router_goodbye_closes_after_the_reply(router):
    """A router GOODBYE (kill) is followed by closing once the client answers GOODBYE."""
    victim, backend = router.join(), router.join("backend")
    reply = backend.call("wamp.session.kill", victim.session_id)
    assert isinstance(reply, message.Result)
    assert victim.received(message.Goodbye)[0].reason == "wamp.close.killed"
    assert not victim.is_open


def test_router_goodbye_closes_after_grace_when_unanswered(router):
    """A client that never answers the router's GOODBYE is disconnected after the grace."""
    backend = router.join("backend")
    mute = router.connect(ticket_for("user", "mute"), answer_goodbye=False)
    backend.call("wamp.session.kill", mute.session_id)
    assert isinstance(mute.last, message.Goodbye) and mute.is_open
    assert mute.session_id not in router.realm.sessions
    router.clock.advance(2.0)
    router.pump()
    assert not mute.is_open


def test_hello_timeout(router):
    """A connection that says no HELLO within hello_timeout is aborted then, not earlier."""
    client = router.connect(say_hello=False)
    router.clock.advance(router.context.limits.hello_timeout - 0.5)
    assert client.is_open and client.messages == []
    router.clock.advance(0.5)
    router.pump()
    assert client.last.reason == "wampchat.close.timeout"
    assert not client.is_open


def test_authenticate_timeout_counts_from_the_challenge():
    """After CHALLENGE the client has authenticate_timeout to answer, not the HELLO timeout."""
    router = RouterHarness(limits=LimitsConfig(hello_timeout=5, authenticate_timeout=20))
    router.clock.advance(100)
    client = router.connect(None)                      # no ticket: never answers the CHALLENGE
    assert [type(m) for m in client.messages] == [message.Challenge]
    router.clock.advance(19.5)
    router.pump()
    assert client.is_open, client.messages
    router.clock.advance(0.5)
    router.pump()
    assert isinstance(client.last, message.Abort)
    assert client.last.reason == "wampchat.close.timeout"
    assert not client.is_open


def test_authenticate_after_timeout_changes_nothing(router):
    """An AUTHENTICATE that arrives after the timeout cannot open a session."""
    client = router.connect(None)
    router.clock.advance(router.context.limits.authenticate_timeout)
    router.pump()
    assert not client.is_open
    assert router.realm.sessions == {}


def test_token_expiry_ends_the_session_at_expires_at(router):
    """GOODBYE token_expired at Accept.expires_at (exp + leeway), not a second earlier."""
    router.clock.advance(1000)
    alice = router.join(exp=1300)
    bob = router.join()
    router.clock.advance(329)
    router.pump()
    assert alice.is_open and not alice.received(message.Goodbye)
    router.clock.advance(1)
    router.pump()
    assert alice.received(message.Goodbye)[0].reason == "wampchat.close.token_expired"
    assert not alice.is_open
    assert bob.is_open
    assert set(router.realm.sessions) == {bob.session_id}


def test_token_already_expired_ends_the_session_at_once(router):
    """An Accept whose expires_at has passed gives a session that is ended on the next turn."""
    router.clock.advance(1000)
    alice = router.join(exp=900 - LEEWAY)
    router.pump()
    assert alice.received(message.Goodbye)[0].reason == "wampchat.close.token_expired"


def test_unknown_role_is_refused(router):
    """An authenticator answering with a role the realm does not have gives ABORT not_authorized."""
    client = router.connect(ticket_for("ghost", "casper"))
    assert client.welcome is None
    assert isinstance(client.last, message.Abort)
    assert client.last.reason == "wamp.error.not_authorized"
    assert not client.is_open


def test_bad_credentials_are_refused(router):
    """An AuthFailure from the authenticator becomes ABORT with its URI and reason."""
    client = router.connect("not-a-ticket")
    assert client.last.reason == "wamp.error.authentication_failed"
    assert client.last.message.startswith("bad_credentials")


def test_close_before_welcome_leaves_no_session_and_no_timers(router):
    """A connection dropped mid-handshake cancels its timers and joins nothing."""
    client = router.connect(None)
    client.transport.close()
    router.pump()
    assert router.realm.sessions == {}
    assert router.clock.getDelayedCalls() == []


def test_closing_a_welcomed_session_cancels_its_timers(router):
    """A session that leaves keeps no timer (token expiry) on the clock."""
    client = router.join(exp=500)
    client.send(message.Goodbye("wamp.close.normal"))
    router.pump()
    assert router.clock.getDelayedCalls() == []


def test_second_hello_during_the_handshake_is_a_protocol_violation(router):
    """HELLO while the CHALLENGE is pending gets ABORT protocol_violation."""
    client = router.connect(None)
    client.send(message.Hello(REALM, client.roles, authmethods=["ticket"]))
    router.pump()
    assert [type(m) for m in client.messages] == [message.Challenge, message.Abort]
    assert client.last.reason == "wamp.error.protocol_violation"
    assert not client.is_open


@pytest.mark.parametrize("serializer", ["json", "msgpack", "cbor"])
def test_welcome_with_roles_marshalled_once_is_autobahns_welcome(serializer):
    """RouterWelcome puts the same bytes on the wire as Autobahn's Welcome, for every
    serializer, and its roles stay the role objects in-process clients read."""
    from wampchat.transport.websocket import SHARED_SERIALIZERS

    details = dict(realm="realm1", authid="alice@example.org", authrole="user",
                   authmethod="ticket", authprovider="keycloak", authextra={"x": [1, "é"]})
    ours = features.RouterWelcome(4242, **details)
    theirs = message.Welcome(4242, features.router_roles(), **details)
    codec = SHARED_SERIALIZERS[serializer]
    assert codec.serialize(ours) == codec.serialize(theirs)
    assert ours.marshal() == theirs.marshal()
    assert ours.roles["broker"].publisher_exclusion is True
    assert codec.unserialize(*codec.serialize(ours))[0].roles.keys() == {"broker", "dealer"}


def test_announced_features_are_the_true_ones_and_shared_between_sessions():
    from autobahn.wamp import role

    from wampchat.router.session import _SHARED_FEATURES_MAX, _announced_features

    roles = {"callee": role.RoleCalleeFeatures(call_canceling=True, progressive_call_results=False),
             "caller": role.RoleCallerFeatures()}
    features = _announced_features(roles)
    assert features == {("callee", "call_canceling")}
    assert _announced_features(dict(roles)) is features
    # made-up combinations beyond the bound are answered but never kept
    for n in range(_SHARED_FEATURES_MAX + 5):
        made_up = {f"role{n}": role.RoleCallerFeatures(call_canceling=True)}
        assert _announced_features(made_up) == {(f"role{n}", "call_canceling")}
    from wampchat.router import session as session_module
    assert len(session_module._SHARED_FEATURES) == _SHARED_FEATURES_MAX
