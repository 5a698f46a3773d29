"""Router procedures (Realm.add_procedure): values and awaitables are RESULTs, failures ERRORs."""

import wampchat  # noqa: F401
from autobahn.wamp import message
from autobahn.wamp.exception import ApplicationError
from twisted.internet.defer import Deferred

from wampchat.errors import RequestError


def test_plain_value_is_the_result(router):
    """A procedure's return value comes back as the single RESULT argument."""
    router.realm.add_procedure("rpc.add", lambda caller, args, kwargs: sum(args) + kwargs["extra"])
    alice = router.join()
    assert alice.call("rpc.add", 1, 2, extra=3).args == [6]


def test_the_procedure_sees_the_calling_session(router):
    """The first argument of a procedure is the caller's session."""
    router.realm.add_procedure("rpc.whoami", lambda caller, args, kwargs: caller.authid)
    assert router.join(authid="alice").call("rpc.whoami").args == ["alice"]


def test_deferred_result_arrives_when_it_fires(router):
    """A procedure returning a Deferred answers when it fires, not before."""
    pending = Deferred()
    router.realm.add_procedure("rpc.later", lambda caller, args, kwargs: pending)
    alice = router.join()
    alice.send(message.Call(1, "rpc.later"))
    router.pump()
    assert alice.received(message.Result) == []
    pending.callback("now")
    router.pump()
    assert [r.args for r in alice.received(message.Result)] == [["now"]]


def test_coroutine_procedure(router):
    """An async procedure's return value is the result."""
    async def double(caller, args, kwargs):
        return args[0] * 2
    router.realm.add_procedure("rpc.double", double)
    assert router.join().call("rpc.double", 21).args == [42]


def test_request_error_and_application_error(router):
    """RequestError and ApplicationError become ERROR with their URI and arguments."""
    def refuse(caller, args, kwargs):
        raise RequestError("wamp.error.invalid_argument", "bad")

    def app_error(caller, args, kwargs):
        raise ApplicationError("com.example.nope", "why", code=1)
    router.realm.add_procedure("rpc.refuse", refuse)
    router.realm.add_procedure("rpc.app", app_error)
    alice = router.join()
    refused = alice.call("rpc.refuse")
    assert (refused.error, refused.args) == ("wamp.error.invalid_argument", ["bad"])
    failed = alice.call("rpc.app")
    assert (failed.error, failed.args, failed.kwargs) == ("com.example.nope", ["why"], {"code": 1})


def test_unexpected_exception_is_a_runtime_error_for_that_call_only(router):
    """A crashing procedure answers ERROR wamp.error.runtime_error; the session stays open."""
    def crash(caller, args, kwargs):
        raise KeyError("internal detail")
    router.realm.add_procedure("rpc.crash", crash)
    alice = router.join()
    reply = alice.call("rpc.crash")
    assert reply.error == "wamp.error.runtime_error"
    assert "internal detail" not in repr(reply.args)
    assert alice.is_open


def test_answer_after_the_caller_left_is_dropped(router):
    """A Deferred firing after its caller left sends nothing and breaks nothing."""
    pending = Deferred()
    router.realm.add_procedure("rpc.later", lambda caller, args, kwargs: pending)
    alice = router.join()
    alice.send(message.Call(1, "rpc.later"))
    alice.send(message.Goodbye("wamp.close.normal"))
    router.pump()
    pending.callback("too late")
    router.pump()
    assert alice.received(message.Result) == []
