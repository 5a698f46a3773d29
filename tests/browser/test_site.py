"""What the web transport serves the browser client besides web/: /config.json and
/vendor/autobahn.min.js (from node_modules next to the web directory), over a real socket."""

from __future__ import annotations

import json

import pytest_twisted
import treq
from twisted.logger import globalLogPublisher

from tests.integration.conftest import reactor
from wampchat.config_types import (AuthMethodConfig, Endpoint, KeycloakAuthConfig,
                                   StaticPrincipal, TransportConfig)
from wampchat.metrics import Metrics
from wampchat.router.session import RouterContext
from wampchat.transport.web import build_site

KEYCLOAK = AuthMethodConfig(method="ticket", type="keycloak", keycloak=KeycloakAuthConfig(
    issuer="https://sso.example.org/realms/acme/", client_id="chat-web"))
CRA = AuthMethodConfig(method="wampcra", type="static",
                       principals=(StaticPrincipal(authid="svc", role="backend", secret="s"),))


async def _serve(tmp_path, auth, realms=("wampchat",)):
    web = tmp_path / "web"
    web.mkdir(exist_ok=True)
    (web / "index.html").write_text("<!doctype html><title>t</title>")
    config = TransportConfig(type="web", endpoint=Endpoint(port=0), auth=auth,
                             web_directory=str(web), ws_path="chat/ws")
    context = RouterContext({name: None for name in realms}, {}, reactor())
    port = reactor().listenTCP(0, build_site(context, config, Metrics()), interface="127.0.0.1")
    return port, f"http://127.0.0.1:{port.getHost().port}"


async def _get(url):
    response = await treq.get(url, persistent=False)
    return response, await treq.content(response)


@pytest_twisted.ensureDeferred
async def test_config_json_names_the_keycloak_realm_client_and_endpoints(tmp_path):
    port, base = await _serve(tmp_path, (KEYCLOAK, CRA), realms=("other", "wampchat"))
    try:
        response, body = await _get(base + "/config.json")
    finally:
        await port.stopListening()
    assert response.code == 200
    assert response.headers.getRawHeaders(b"cache-control") == [b"no-store"]
    issuer = "https://sso.example.org/realms/acme"
    assert json.loads(body) == {
        "realm": "wampchat", "ws_path": "/chat/ws",
        "keycloak": {"issuer": issuer, "client_id": "chat-web", "realm": "acme",
                     "authorization_endpoint": issuer + "/protocol/openid-connect/auth",
                     "token_endpoint": issuer + "/protocol/openid-connect/token",
                     "end_session_endpoint": issuer + "/protocol/openid-connect/logout"}}


@pytest_twisted.ensureDeferred
async def test_config_json_without_keycloak_offers_no_sign_in(tmp_path):
    port, base = await _serve(tmp_path, (CRA,), realms=("first", "second"))
    try:
        response, body = await _get(base + "/config.json")
    finally:
        await port.stopListening()
    assert json.loads(body) == {"realm": "first", "ws_path": "/chat/ws", "keycloak": None}


@pytest_twisted.ensureDeferred
async def test_autobahn_missing_is_a_404_and_a_log_line_then_served_once_installed(tmp_path):
    logged = []
    globalLogPublisher.addObserver(logged.append)
    port, base = await _serve(tmp_path, (KEYCLOAK,))
    try:
        missing, body = await _get(base + "/vendor/autobahn.min.js")
        package = tmp_path / "node_modules" / "autobahn-browser"
        package.mkdir(parents=True)
        (package / "autobahn.min.js").write_text("var autobahn = {};")
        found, script = await _get(base + "/vendor/autobahn.min.js")
        other, _ = await _get(base + "/vendor/other.js")
    finally:
        await port.stopListening()
        globalLogPublisher.removeObserver(logged.append)
    assert missing.code == 404 and b"autobahn-browser is not installed" in body
    lines = [e.get("log_format", "").format(**e) for e in logged if "npm install" in e.get("log_format", "")]
    assert lines == [f"{package / 'autobahn.min.js'} is missing: run `npm install` (or `make run`) "
                     "in the repository to get the npm package autobahn-browser"]
    assert found.code == 200 and script == b"var autobahn = {};"
    assert found.headers.getRawHeaders(b"content-type")[0].split(b";")[0] in (
        b"text/javascript", b"application/javascript")
    assert other.code == 404


@pytest_twisted.ensureDeferred
async def test_web_client_files_carry_a_content_security_policy(tmp_path):
    port, base = await _serve(tmp_path, (KEYCLOAK,))
    try:
        page, _ = await _get(base + "/")
        named, _ = await _get(base + "/index.html")
        health, _ = await _get(base + "/healthz")
    finally:
        await port.stopListening()
    [policy] = page.headers.getRawHeaders(b"content-security-policy")
    assert named.headers.getRawHeaders(b"content-security-policy") == [policy]
    directives = dict(d.strip().split(" ", 1) for d in policy.decode().split(";"))
    assert directives["script-src"] == "'self'"                 # no inline script, no eval
    assert directives["connect-src"] == "'self' https://sso.example.org"
    assert directives["frame-ancestors"] == "'none'"
    assert health.headers.getRawHeaders(b"content-security-policy") is None
