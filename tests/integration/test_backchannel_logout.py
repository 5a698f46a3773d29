"""End to end: Keycloak back-channel logout against the shipped config (SPEC §3 item 7).

The shipped crossbar-like.yaml node, the dev issuer's tokens (JWKS over HTTP) and
users in PostgreSQL, as in test_keycloak_login.py; logout tokens are POSTed to
/backchannel-logout with treq over loopback.
"""

from __future__ import annotations

import uuid

import pytest
import pytest_twisted
import treq

from tests.integration.dev_node import TicketUser, connect_ticket_user, start_dev_node, stop_node
from tests.integration.conftest import reactor, within
from tests.users.conftest import postgres_server, users_database  # noqa: F401 (fixtures)
from wampchat import errors
from wampchat.dev.issuer import DevIssuer, stable_sub


@pytest.fixture
def keycloak_node(users_database):  # noqa: F811 (pytest fixture injection)
    """The shipped node with its dev issuer at /realms/wampchat; every client closed at the end."""
    port, issuer, node = start_dev_node(users_database)
    clients: list[TicketUser] = []
    yield port, issuer, node, clients
    stop_node(node)
    for client in clients:
        if client.left.called:
            continue
        try:
            pytest_twisted.blockon(within(client.left))
        except Exception:
            transport = getattr(client, "_transport", None)
            if transport is not None:
                transport.close()


async def connect(port: int, token: str, clients: list) -> TicketUser:
    client = await connect_ticket_user(port, token)
    clients.append(client)
    return client


async def post_logout(port: int, token: str) -> tuple[int, dict]:
    response = await within(treq.post(f"http://127.0.0.1:{port}/backchannel-logout",
                                      data={"logout_token": token}, reactor=reactor(),
                                      persistent=False))
    return response.code, await within(treq.json_content(response))


async def get_text(port: int, path: str) -> str:
    response = await within(treq.get(f"http://127.0.0.1:{port}{path}", reactor=reactor(),
                                     persistent=False))
    return await within(treq.text_content(response))


def open_sids(node) -> set[str | None]:
    """The sids of the open Keycloak sessions (the in-process components have none)."""
    return {session.credentials.sid for session in node.realms["wampchat"].sessions.values()
            if session.credentials.authprovider == "keycloak"}


@pytest_twisted.ensureDeferred
async def test_backchannel_logout_ends_the_right_sessions(keycloak_node):
    """sid logout ends that login session; sub logout ends all of the user's; others stay."""
    port, issuer, node, clients = keycloak_node
    alice_sid1, alice_sid2, bob_sid = (str(uuid.uuid4()) for _ in range(3))
    alice1 = await connect(port, issuer.mint("alice", sid=alice_sid1), clients)
    alice2 = await connect(port, issuer.mint("alice", sid=alice_sid2), clients)
    bob = await connect(port, issuer.mint("bob", sid=bob_sid), clients)
    assert open_sids(node) == {alice_sid1, alice_sid2, bob_sid}

    # A forged token (another realm key, same issuer URL) and a tampered one: 400, nothing ends.
    impostor = DevIssuer(issuer.issuer, reactor())
    forged = impostor.mint_logout(sub=stable_sub("alice"))
    header, payload, signature = issuer.mint_logout(sub=stable_sub("alice")).split(".")
    tampered = ".".join([header, payload, signature[::-1]])
    for bad in (forged, tampered, issuer.mint_logout(sub=stable_sub("alice"), nonce="x")):
        status, body = await post_logout(port, bad)
        assert status == 400 and body["error"] == "invalid_request", body
    assert open_sids(node) == {alice_sid1, alice_sid2, bob_sid}

    # sid logout: only alice's first login session.
    status, body = await post_logout(port, issuer.mint_logout(sub=stable_sub("alice"),
                                                              sid=alice_sid1))
    assert status == 200, body
    details = await within(alice1.left)
    assert details.reason == errors.CLOSE_LOGGED_OUT
    assert open_sids(node) == {alice_sid2, bob_sid}
    assert not alice2.left.called and not bob.left.called

    # sub-only logout: every alice session; bob stays.
    status, body = await post_logout(port, issuer.mint_logout(sub=stable_sub("alice")))
    assert status == 200, body
    details = await within(alice2.left)
    assert details.reason == errors.CLOSE_LOGGED_OUT
    assert open_sids(node) == {bob_sid}
    assert not bob.left.called


@pytest_twisted.ensureDeferred
async def test_metrics_show_jwks_fetches_after_a_login(keycloak_node):
    """/metrics counts the JWKS fetch a first login causes, and reports the keys' age."""
    port, issuer, node, clients = keycloak_node
    await connect(port, issuer.mint("alice"), clients)
    text = await get_text(port, "/metrics")
    assert 'wampchat_jwks_fetches_total{outcome="ok"} 1.0' in text
    age = [line for line in text.splitlines()
           if line.startswith("wampchat_jwks_key_age_seconds ")]
    assert age and age[0].split()[1] != "NaN"
    assert 'wampchat_db_pool_connections{state="total"}' in text
