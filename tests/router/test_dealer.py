"""CALL -> INVOCATION -> YIELD -> RESULT: patterns, sharing, cancel, timeouts, sessions leaving."""

import random

import pytest

import wampchat  # noqa: F401
from autobahn.wamp import message

from tests.router.harness import CANCELING_ROLES


def invocations(client):
    """Every INVOCATION the client received."""
    return client.received(message.Invocation)


def call(caller, request, procedure, **options):
    """Send a CALL without pumping."""
    caller.send(message.Call(request, procedure, **options))


def test_exact_call_reaches_the_callee_and_the_result_returns(router):
    """The callee gets INVOCATION with the args; its YIELD comes back as RESULT."""
    callee, caller = router.join("backend"), router.join()
    registration = callee.register("rpc.echo")
    call(caller, 5, "rpc.echo", args=[1, 2], kwargs={"k": "v"})
    router.pump()
    (invocation,) = invocations(callee)
    assert (invocation.registration, invocation.args, invocation.kwargs, invocation.procedure) == \
        (registration, [1, 2], {"k": "v"}, None)
    callee.send(message.Yield(invocation.request, args=["done"], kwargs={"n": 1}))
    router.pump()
    assert isinstance(caller.last, message.Result)
    assert (caller.last.request, caller.last.args, caller.last.kwargs) == (5, ["done"], {"n": 1})
    assert router.realm.dealer.calls_in_flight == 0


@pytest.mark.parametrize("pattern, match, procedure, invoked", [
    ("rpc.echo", None, "rpc.echo", True),
    ("rpc.echo", None, "rpc.echo.more", False),
    ("rpc.", "prefix", "rpc.echo", True),
    ("rpc.e", "prefix", "rpc.x", False),
    ("rpc..go", "wildcard", "rpc.fast.go", True),
    ("rpc..go", "wildcard", "rpc.fast.stop", False),
])
def test_registrations_by_match_policy(router, pattern, match, procedure, invoked):
    """A registration is invoked exactly when its pattern matches; patterns get the procedure."""
    callee, caller = router.join("backend"), router.join()
    callee.register(pattern, match)
    call(caller, 1, procedure)
    router.pump()
    if invoked:
        (invocation,) = invocations(callee)
        assert invocation.procedure == (procedure if match else None)
    else:
        assert invocations(callee) == []
        assert caller.last.error == "wamp.error.no_such_procedure"


def test_precedence_exact_then_longest_prefix_then_wildcard(router):
    """The most specific registration gets the call."""
    exact, short, long_, wild = (router.join("backend", authid=name)
                                 for name in ("exact", "short", "long", "wild"))
    exact.register("rpc.a.b")
    short.register("rpc.", "prefix")
    long_.register("rpc.a.", "prefix")
    wild.register("rpc..b", "wildcard")
    caller = router.join()
    for request, procedure in enumerate(["rpc.a.b", "rpc.a.c", "rpc.x.b", "rpc.y"], start=1):
        call(caller, request, procedure)
    router.pump()
    assert [i.procedure for i in invocations(exact)] == [None]
    assert [i.procedure for i in invocations(long_)] == ["rpc.a.c"]
    assert [i.procedure for i in invocations(short)] == ["rpc.x.b", "rpc.y"]
    assert invocations(wild) == []


def test_wildcard_is_used_when_no_prefix_matches(router):
    """Without a matching exact or prefix registration, the wildcard gets the call."""
    wild, caller = router.join("backend"), router.join("backend")
    wild.register("svc..b", "wildcard")
    call(caller, 1, "svc.x.b")
    router.pump()
    assert [i.procedure for i in invocations(wild)] == ["svc.x.b"]


def test_single_registration_refuses_a_second_callee(router):
    """A second REGISTER of a single registration gets ERROR procedure_already_exists."""
    first, second = router.join("backend"), router.join("backend")
    first.register("rpc.x")
    for invoke in (None, "roundrobin"):
        second.send(message.Register(1, "rpc.x", invoke=invoke))
        router.pump()
        assert second.last.error == "wamp.error.procedure_already_exists"
    first.send(message.Register(9, "rpc.x"))
    router.pump()
    assert first.last.error == "wamp.error.procedure_already_exists"


def test_different_invocation_policy_is_a_conflict(router):
    """Joining a shared registration with another policy gets ERROR ..._invocation_policy."""
    first, second, third = (router.join("backend") for _ in range(3))
    first.register("rpc.x", invoke="roundrobin")
    for invoke in ("random", "single"):
        second.send(message.Register(1, "rpc.x", invoke=invoke))
        router.pump()
        assert second.last.error == "wamp.error.procedure_exists_with_different_invocation_policy"
    registration = first.received(message.Registered)[0].registration
    assert third.register("rpc.x", invoke="roundrobin") == registration


def shared(router, invoke, count=3):
    """count backend callees sharing rpc.shared with the invoke policy."""
    callees = [router.join("backend", authid=f"callee{i}") for i in range(count)]
    ids = {callee.register("rpc.shared", invoke=invoke) for callee in callees}
    assert len(ids) == 1
    return callees


def who_gets(router, callees, calls):
    """Indexes of the callees invoked by calls CALLs, in call order."""
    caller = router.join()
    for request in range(1, calls + 1):
        call(caller, request, "rpc.shared", args=[request])
    router.pump()
    by_arg = {i.args[0]: n for n, callee in enumerate(callees) for i in invocations(callee)}
    return [by_arg[request] for request in range(1, calls + 1)]


def test_roundrobin(router):
    """roundrobin invokes the callees in turn."""
    callees = shared(router, "roundrobin")
    assert who_gets(router, callees, 7) == [0, 1, 2, 0, 1, 2, 0]


def test_roundrobin_survives_a_callee_leaving(router):
    """After a callee leaves, roundrobin keeps cycling over the others."""
    callees = shared(router, "roundrobin")
    callees[1].send(message.Goodbye("wamp.close.normal"))
    router.pump()
    assert sorted(who_gets(router, callees, 4)) == [0, 0, 2, 2]


def test_random_uses_the_injected_rng(router):
    """random picks with the realm's rng (seeded here), so the sequence is reproducible."""
    callees = shared(router, "random")
    expected_rng = random.Random(0)
    expected = [expected_rng.choice(range(3)) for _ in range(30)]
    got = who_gets(router, callees, 30)
    assert got == expected
    assert set(got) == {0, 1, 2}


def test_first_and_last(router):
    """first invokes the earliest registered callee, last the latest; leaving moves the choice."""
    callees = shared(router, "first")
    assert who_gets(router, callees, 2) == [0, 0]
    callees[0].send(message.Goodbye("wamp.close.normal"))
    router.pump()
    assert who_gets(router, callees, 1) == [1]


def test_last(router):
    """last invokes the latest registered callee."""
    callees = shared(router, "last")
    assert who_gets(router, callees, 2) == [2, 2]


def test_caller_disclosure_follows_the_callers_permission(router):
    """A user's call to rpc.* discloses the caller; a backend's call to svc.* does not."""
    callee = router.join("backend")
    callee.register("rpc.x")
    callee.register("svc.x")
    user, backend = router.join(authid="alice"), router.join("backend")
    call(user, 1, "rpc.x")
    call(backend, 1, "svc.x")
    router.pump()
    disclosed, hidden = invocations(callee)
    assert (disclosed.caller, disclosed.caller_authid, disclosed.caller_authrole) == \
        (user.session_id, "alice", "user")
    assert (hidden.caller, hidden.caller_authid, hidden.caller_authrole) == (None, None, None)


def test_unauthorized_register_and_call(router):
    """A user may not register, nor call what no row allows: ERROR not_authorized."""
    alice = router.join()
    alice.send(message.Register(1, "rpc.mine"))
    alice.send(message.Call(2, "svc.secret"))
    router.pump()
    assert [(e.request_type, e.error) for e in alice.received(message.Error)] == [
        (message.Register.MESSAGE_TYPE, "wamp.error.not_authorized"),
        (message.Call.MESSAGE_TYPE, "wamp.error.not_authorized")]


def test_no_such_procedure(router):
    """A CALL nobody registered gets ERROR wamp.error.no_such_procedure."""
    alice = router.join()
    reply = alice.call("rpc.nobody")
    assert reply.error == "wamp.error.no_such_procedure"


def test_progressive_results(router):
    """Progressive YIELDs reach a caller that asked for them, then the final RESULT."""
    callee, caller, plain = router.join("backend"), router.join(), router.join()
    callee.register("rpc.stream")
    call(caller, 1, "rpc.stream", receive_progress=True)
    call(plain, 1, "rpc.stream")
    router.pump()
    streaming, quiet = invocations(callee)
    assert streaming.receive_progress is True and quiet.receive_progress is None
    for invocation in (streaming, quiet):
        callee.send(message.Yield(invocation.request, args=[1], progress=True))
        callee.send(message.Yield(invocation.request, args=[2], progress=True))
        callee.send(message.Yield(invocation.request, args=["end"]))
    router.pump()
    assert [(r.args, bool(r.progress)) for r in caller.received(message.Result)] == \
        [([1], True), ([2], True), (["end"], False)]
    assert [(r.args, bool(r.progress)) for r in plain.received(message.Result)] == \
        [(["end"], False)]


def test_callee_error_is_forwarded(router):
    """An ERROR for an INVOCATION reaches the caller as ERROR for its CALL, args and kwargs kept."""
    callee, caller = router.join("backend"), router.join()
    callee.register("rpc.fail")
    call(caller, 4, "rpc.fail")
    router.pump()
    callee.send(message.Error(message.Invocation.MESSAGE_TYPE, invocations(callee)[0].request,
                              "com.example.oops", args=["why"], kwargs={"code": 7}))
    router.pump()
    error = caller.last
    assert (error.request_type, error.request, error.error, error.args, error.kwargs) == \
        (message.Call.MESSAGE_TYPE, 4, "com.example.oops", ["why"], {"code": 7})


def test_yield_and_error_for_unknown_invocations_are_ignored(router):
    """YIELD or ERROR for an invocation the router does not know is ignored, closing nothing."""
    callee, caller, stranger = router.join("backend"), router.join(), router.join("backend")
    callee.register("rpc.x")
    call(caller, 1, "rpc.x")
    router.pump()
    invocation = invocations(callee)[0].request
    callee.send(message.Yield(invocation + 100, args=["bogus"]))
    callee.send(message.Error(message.Invocation.MESSAGE_TYPE, invocation + 100, "x.y"))
    stranger.send(message.Yield(invocation, args=["not yours"]))
    router.pump()
    assert caller.received(message.Result) == [] and caller.received(message.Error) == []
    assert callee.is_open and stranger.is_open
    callee.send(message.Yield(invocation, args=["real"]))
    router.pump()
    assert [r.args for r in caller.received(message.Result)] == [["real"]]


def start_call(router, callee_roles=CANCELING_ROLES, **options):
    """A backend callee (announcing call_canceling by default), a user caller, a call in flight."""
    callee, caller = router.join("backend", roles=callee_roles), router.join()
    callee.register("rpc.slow")
    call(caller, 1, "rpc.slow", **options)
    router.pump()
    return callee, caller, invocations(callee)[0].request


def test_cancel_skip(router):
    """skip: the caller gets ERROR canceled at once, the callee no INTERRUPT, YIELD dropped."""
    callee, caller, invocation = start_call(router)
    caller.send(message.Cancel(1, mode="skip"))
    router.pump()
    assert caller.last.error == "wamp.error.canceled"
    assert callee.received(message.Interrupt) == []
    callee.send(message.Yield(invocation, args=["late"]))
    router.pump()
    assert caller.received(message.Result) == []


def test_cancel_kill(router):
    """kill: the callee gets INTERRUPT kill; the caller gets the callee's answer to it."""
    callee, caller, invocation = start_call(router)
    caller.send(message.Cancel(1, mode="kill"))
    router.pump()
    (interrupt,) = callee.received(message.Interrupt)
    assert (interrupt.request, interrupt.mode) == (invocation, "kill")
    assert caller.received(message.Error) == []
    caller.send(message.Cancel(1, mode="kill"))       # a repeated CANCEL changes nothing
    router.pump()
    assert len(callee.received(message.Interrupt)) == 1
    callee.send(message.Error(message.Invocation.MESSAGE_TYPE, invocation, "wamp.error.canceled"))
    router.pump()
    assert [e.error for e in caller.received(message.Error)] == ["wamp.error.canceled"]


def test_cancel_killnowait(router):
    """killnowait: INTERRUPT to the callee and ERROR canceled to the caller at once."""
    callee, caller, invocation = start_call(router)
    caller.send(message.Cancel(1, mode="killnowait"))
    router.pump()
    assert [i.mode for i in callee.received(message.Interrupt)] == ["killnowait"]
    assert [e.error for e in caller.received(message.Error)] == ["wamp.error.canceled"]
    callee.send(message.Yield(invocation, args=["late"]))
    router.pump()
    assert caller.received(message.Result) == []


def test_cancel_kill_of_a_callee_without_call_canceling_acts_as_skip(router):
    """A callee that did not announce call_canceling gets no INTERRUPT; the caller is answered."""
    callee, caller, _ = start_call(router, callee_roles=None)
    caller.send(message.Cancel(1, mode="kill"))
    router.pump()
    assert callee.received(message.Interrupt) == []
    assert caller.last.error == "wamp.error.canceled"


def test_call_timeout(router):
    """A call gets ERROR timeout (and its callee INTERRUPT) at its timeout, not before."""
    callee, caller, invocation = start_call(router, timeout=1500)
    router.clock.advance(1.499)
    router.pump()
    assert caller.received(message.Error) == []
    router.clock.advance(0.001)
    router.pump()
    assert [e.error for e in caller.received(message.Error)] == ["wamp.error.timeout"]
    assert [(i.request, i.mode) for i in callee.received(message.Interrupt)] == \
        [(invocation, "killnowait")]
    callee.send(message.Yield(invocation, args=["late"]))
    router.pump()
    assert caller.received(message.Result) == []


def test_answered_call_cancels_its_timeout(router):
    """A call answered in time leaves no timer behind and gets no timeout ERROR."""
    callee, caller, invocation = start_call(router, timeout=1000)
    callee.send(message.Yield(invocation, args=["fast"]))
    router.pump()
    router.clock.advance(5)
    router.pump()
    assert [r.args for r in caller.received(message.Result)] == [["fast"]]
    assert caller.received(message.Error) == []


def test_callee_leaving_mid_call_cancels_the_call(router):
    """The caller of a call whose callee leaves gets ERROR wamp.error.canceled."""
    callee, caller, _ = start_call(router)
    callee.send(message.Goodbye("wamp.close.normal"))
    router.pump()
    assert [(e.request, e.error) for e in caller.received(message.Error)] == \
        [(1, "wamp.error.canceled")]
    assert router.realm.dealer.calls_in_flight == 0
    assert caller.call("rpc.slow").error == "wamp.error.no_such_procedure"


def test_caller_leaving_interrupts_the_callee(router):
    """The callee of a call whose caller leaves gets INTERRUPT; its later YIELD is ignored."""
    callee, caller, invocation = start_call(router)
    caller.send(message.Goodbye("wamp.close.normal"))
    router.pump()
    assert [i.request for i in callee.received(message.Interrupt)] == [invocation]
    callee.send(message.Yield(invocation, args=["nobody listens"]))
    router.pump()
    assert callee.is_open
    assert router.realm.dealer.calls_in_flight == 0


def test_unregister(router):
    """UNREGISTER removes the callee; a second one gets no_such_registration."""
    callee, caller = router.join("backend"), router.join()
    registration = callee.register("rpc.x")
    callee.send(message.Unregister(2, registration))
    router.pump()
    assert isinstance(callee.last, message.Unregistered)
    callee.send(message.Unregister(3, registration))
    router.pump()
    assert callee.last.error == "wamp.error.no_such_registration"
    assert caller.call("rpc.x").error == "wamp.error.no_such_procedure"


def test_router_procedures_cannot_be_registered(router):
    """Registering a procedure the router provides gets ERROR procedure_already_exists."""
    backend = router.join("backend")
    backend.send(message.Register(1, "wamp.session.count"))
    router.pump()
    assert backend.last.error == "wamp.error.procedure_already_exists"


def test_interrupted_calls_are_counted_by_reason(router):
    from wampchat.metrics import Metrics

    metrics = Metrics()
    metrics.watch_realm(router.realm)
    callee = router.join("backend", roles=CANCELING_ROLES)
    callee.register("rpc.slow")
    caller = router.join("user", roles=CANCELING_ROLES)

    def count(reason):
        return metrics.registry.get_sample_value("wampchat_calls_interrupted_total",
                                                 {"reason": reason}) or 0

    caller.send(message.Call(caller.request(), "rpc.slow", timeout=1000))
    router.pump()
    router.clock.advance(1.5)
    router.pump()
    request = caller.request()
    caller.send(message.Call(request, "rpc.slow"))
    router.pump()
    caller.send(message.Cancel(request, mode="killnowait"))
    router.pump()
    caller.send(message.Call(caller.request(), "rpc.slow"))
    router.pump()
    assert router.realm.dealer.cancel_all("the router is shutting down") == 1
    router.pump()
    assert (count("timeout"), count("canceled"), count("shutdown")) == (1, 1, 1)
    errors_seen = [m.error for m in caller.received(message.Error)]
    assert errors_seen == ["wamp.error.timeout", "wamp.error.canceled", "wamp.error.canceled"]
