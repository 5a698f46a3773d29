"""End to end: a user logs out at the development issuer and the router ends her sessions.

The shipped config node with its dev issuer at /realms/wampchat, wired as `wampchat
dev` wires it (back-channel logout URL = the node's own /backchannel-logout). Tokens
come from the issuer's token endpoint over real HTTP; clients join over real
WebSockets; the logout is a real HTTP call to the end-session endpoint, and the
issuer's logout token reaches the router by a real HTTP POST.
"""

from __future__ import annotations

import json

import pytest_twisted
import treq

from tests.integration.conftest import reactor, within
from tests.integration.test_backchannel_logout import (connect, keycloak_node,  # noqa: F401
                                                       open_sids)
from tests.users.conftest import postgres_server, users_database  # noqa: F401 (fixtures)
from wampchat import errors
from wampchat.dev.runner import backchannel_logout_url


async def post_form(url: str, form: dict) -> tuple[int, dict | bytes]:
    response = await within(treq.post(url, data=form, reactor=reactor(), persistent=False,
                                      allow_redirects=False))
    body = await within(treq.content(response))
    if response.headers.getRawHeaders(b"content-type", [b""])[0].startswith(b"application/json"):
        return response.code, json.loads(body)
    return response.code, body


async def password_login(oidc: str, username: str) -> dict:
    status, answer = await post_form(f"{oidc}/token", {
        "grant_type": "password", "client_id": "wampchat", "username": username,
        "password": username, "scope": "openid email profile"})
    assert status == 200, answer
    return answer


@pytest_twisted.ensureDeferred
async def test_logout_at_the_issuer_ends_that_logins_sessions_only(keycloak_node):  # noqa: F811
    """alice (one login, two connections) logs out at the issuer: both get GOODBYE
    wampchat.close.logged_out; her other login and bob stay; her refresh token is dead."""
    port, issuer, node, clients = keycloak_node
    issuer.backchannel_logout_url = backchannel_logout_url(issuer.issuer)
    assert issuer.backchannel_logout_url == f"http://127.0.0.1:{port}/backchannel-logout"
    oidc = f"{issuer.issuer}/protocol/openid-connect"

    alice = await password_login(oidc, "alice")
    tab1 = await connect(port, alice["access_token"], clients)
    status, refreshed = await post_form(f"{oidc}/token", {
        "grant_type": "refresh_token", "client_id": "wampchat",
        "refresh_token": alice["refresh_token"]})
    assert status == 200
    tab2 = await connect(port, refreshed["access_token"], clients)       # same login, same sid
    phone_login = await password_login(oidc, "alice")
    phone = await connect(port, phone_login["access_token"], clients)
    bob_login = await password_login(oidc, "bob")
    bob = await connect(port, bob_login["access_token"], clients)
    assert open_sids(node) == {alice["session_state"], phone_login["session_state"],
                               bob_login["session_state"]}

    response = await within(treq.get(f"{oidc}/logout", params={
        "id_token_hint": refreshed["id_token"], "client_id": "wampchat",
        "post_logout_redirect_uri": f"http://127.0.0.1:{port}/", "state": "bye"},
        reactor=reactor(), persistent=False, allow_redirects=False))
    await within(treq.content(response))
    assert response.code == 302
    assert response.headers.getRawHeaders(b"location")[0].decode() == \
        f"http://127.0.0.1:{port}/?state=bye"

    # The issuer answers after the back-channel POST is done, so the GOODBYEs are on their way.
    for tab in (tab1, tab2):
        details = await within(tab.left)
        assert details.reason == errors.CLOSE_LOGGED_OUT
    assert open_sids(node) == {phone_login["session_state"], bob_login["session_state"]}
    assert not phone.left.called and not bob.left.called

    status, refused = await post_form(f"{oidc}/token", {
        "grant_type": "refresh_token", "client_id": "wampchat",
        "refresh_token": refreshed["refresh_token"]})
    assert status == 400 and refused["error"] == "invalid_grant"
    # The other login still refreshes, and its new token still logs in.
    status, again = await post_form(f"{oidc}/token", {
        "grant_type": "refresh_token", "client_id": "wampchat",
        "refresh_token": phone_login["refresh_token"]})
    assert status == 200
    await connect(port, again["access_token"], clients)


@pytest_twisted.ensureDeferred
async def test_logout_by_refresh_token_form_post(keycloak_node):  # noqa: F811
    """The web client's way: POST client_id + refresh_token, 204, and the session ends."""
    port, issuer, node, clients = keycloak_node
    issuer.backchannel_logout_url = backchannel_logout_url(issuer.issuer)
    oidc = f"{issuer.issuer}/protocol/openid-connect"
    bob = await password_login(oidc, "bob")
    session = await connect(port, bob["access_token"], clients)
    status, body = await post_form(f"{oidc}/logout", {"client_id": "wampchat",
                                                      "refresh_token": bob["refresh_token"]})
    assert status == 204 and body == b""
    details = await within(session.left)
    assert details.reason == errors.CLOSE_LOGGED_OUT
    assert open_sids(node) == set()
