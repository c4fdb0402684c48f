"""Providers on hosts of their own: the OAuth2 grants call the token and authorize endpoints configured
for them (here a separate host, in front of the sandbox), never a path under the API; and a function
whose configuration lacks an endpoint a provider needs does not start."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import pytest
from pydantic import TypeAdapter, ValidationError
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from billhub.providers import REGISTRY
from billhub.providers.auth import AuthorizationCodeGrant, OAuthTokens
from billhub.providers.http import RetryPolicy
from billhub.providers.northgas import NorthGasCredentials
from billhub.providers.session import ProviderConnector, ProviderDirectory
from billhub.settings import ProviderEndpoints
from mock_provider.control import Control
from mock_provider.registry import service_endpoints
from tests.sandbox import SANDBOX_CLIENTS, account, now

REDIRECT = "http://127.0.0.1:9/callback"
FAST = RetryPolicy(attempts=2, initial_wait=0.01, max_wait=0.02, read_timeout=30)
HOP_BY_HOP = {"connection", "content-length", "transfer-encoding", "content-encoding", "keep-alive"}


@pytest.fixture
def identity_host(mock_provider: tuple[str, Control]) -> Iterator[str]:
    """A host of its own for the providers' sign-in and tokens: ``/login/<path>`` forwards to the
    sandbox's ``/<path>``."""
    upstream = mock_provider[0]

    @Request.application
    def forward(request: Request) -> Response:
        if not request.path.startswith("/login/"):
            return Response("not here", status=404)
        answer = httpx.request(
            request.method,
            f"{upstream}{request.path.removeprefix('/login')}",
            params=list(request.args.items(multi=True)),
            content=request.get_data(),
            headers={k: v for k, v in request.headers.items() if k.lower() not in {"host", *HOP_BY_HOP}},
        )
        headers = [(k, v) for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP]
        return Response(answer.content, status=answer.status_code, headers=headers)

    server = make_server("127.0.0.1", 0, forward, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/login"
    server.shutdown()
    thread.join()


def split_endpoints(api_root: str, login_root: str) -> dict[str, dict[str, str]]:
    """The sandbox's APIs where they are, every token and authorize endpoint on the identity host."""
    endpoints = service_endpoints(api_root)
    for name, on_login_host in service_endpoints(login_root).items():
        endpoints[name].update({key: url for key, url in on_login_host.items() if key != "api"})
    return endpoints


def hosts(urls: Iterable[str], where: Callable[[str], bool]) -> set[str]:
    return {urlsplit(url).netloc for url in urls if where(urlsplit(url).path)}


def test_the_oauth_grants_use_the_endpoints_configured_on_another_host(
    mock_provider: tuple[str, Control], identity_host: str
) -> None:
    api_root = mock_provider[0]
    endpoints = TypeAdapter(dict[str, ProviderEndpoints]).validate_python(split_endpoints(api_root, identity_host))
    directory = ProviderDirectory(endpoints, SANDBOX_CLIENTS)
    grant = REGISTRY["sparkgrid"].auth
    assert isinstance(grant, AuthorizationCodeGrant)
    sent: list[str] = []

    async def note(request: httpx.Request) -> None:
        sent.append(str(request.url))

    async def scenario() -> tuple[int, int]:
        async with httpx.AsyncClient(event_hooks={"request": [note]}) as client:
            connector = ProviderConnector(client, directory, now, FAST)
            # SparkGrid: the user signs in on the identity host, the code is exchanged there
            authorize = grant.authorize_url(
                directory.url("sparkgrid", "authorize"), SANDBOX_CLIENTS["sparkgrid"], REDIRECT, "s"
            )
            assert authorize.startswith(f"{identity_host}/sparkgrid/oauth/authorize?")
            consent = await client.get(f"{authorize}&{urlencode({'login_hint': 'ada'})}")
            code = dict(parse_qsl(urlsplit(consent.headers["Location"]).query))["code"]
            tokens: OAuthTokens = await grant.exchange_code(
                connector.http("sparkgrid"),
                directory.url("sparkgrid", "token"),
                SANDBOX_CLIENTS["sparkgrid"],
                code,
                REDIRECT,
                now(),
            )
            # and an expired access token is renewed there too, before the API is called
            stale = tokens.model_copy(update={"access_token_expires_at": now() - timedelta(minutes=1)})
            session = connector.session("sparkgrid", stale)
            sparkgrid_bills = await REGISTRY["sparkgrid"].fetch_bills(session, account("sparkgrid"))
            # NorthGas: the service token comes from the identity host
            gas = connector.session("northgas", NorthGasCredentials(account_number="NG123456", postcode="NG1 1AA"))
            gas_bills = await REGISTRY["northgas"].fetch_bills(gas, account("northgas"))
            return len(sparkgrid_bills), len(gas_bills)

    assert asyncio.run(scenario()) == (24, 24)
    api_host, login_host = urlsplit(api_root).netloc, urlsplit(identity_host).netloc
    # Given the token and authorize URLs, every OAuth call went to the identity host, each API call to the API
    assert hosts(sent, lambda path: "/oauth/" in path) == {login_host}
    assert hosts(sent, lambda path: "/oauth/" not in path) == {api_host}
    assert {urlsplit(url).path for url in sent if "/oauth/" in url} == {
        "/login/sparkgrid/oauth/authorize",
        "/login/sparkgrid/oauth/token",
        "/login/northgas/oauth/token",
    }


@pytest.mark.parametrize("function", ["LinkAccountFunction", "FetchProviderFunction"])
def test_a_function_missing_an_endpoint_a_provider_needs_does_not_start(
    request: pytest.FixtureRequest, function: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a deployment that gave SparkGrid its API but forgot where its tokens are issued
    endpoints = service_endpoints("https://providers.example")
    del endpoints["sparkgrid"]["token"]
    request.applymarker(pytest.mark.stack_parameters(ProviderEndpoints=json.dumps(endpoints)))
    load_handler: Callable[[str], Any] = request.getfixturevalue("load_handler")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "session-token-that-must-not-leak")
    # When the function starts cold, it stops there, naming the provider and the endpoint
    with pytest.raises(ValidationError) as raised:
        load_handler(function)
    message = str(raised.value)
    assert "provider 'sparkgrid' (oauth2_authorization_code) has no 'token' endpoint" in message
    assert "PROVIDER_ENDPOINTS" in message
    assert "session-token-that-must-not-leak" not in message
