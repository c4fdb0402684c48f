"""Where the providers are is configuration: each registered provider has every endpoint its auth needs,
or the function refuses to start, saying which provider lacks which endpoint (and never echoing a value)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from billhub.providers import REGISTRY
from billhub.settings import ProviderSettings
from mock_provider.registry import service_endpoints

ROOT = "https://providers.example"
OTHER_SETTINGS = {
    "CREDENTIALS_KEY_ID": "alias/credentials",
    "PROVIDER_CLIENTS_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:clients",
    # What a Lambda's environment holds beside the settings: no error may repeat it.
    "AWS_SESSION_TOKEN": "session-token-that-must-not-leak",
}


def settings(endpoints: Any) -> ProviderSettings:
    return ProviderSettings.from_environ({**OTHER_SETTINGS, "PROVIDER_ENDPOINTS": json.dumps(endpoints)})


def refusal(endpoints: Any) -> str:
    with pytest.raises(ValidationError) as raised:
        settings(endpoints)
    message = str(raised.value)
    assert "session-token-that-must-not-leak" not in message
    return message


def test_each_adapter_needs_its_api_and_the_endpoints_its_auth_calls() -> None:
    assert {name: adapter.endpoints_needed() for name, adapter in REGISTRY.items()} == {
        "sparkgrid": ("api", "token", "authorize"),  # OAuth2 authorization code
        "northgas": ("api", "token"),  # OAuth2 client credentials
        "clearwater": ("api",),  # API key
        "fibrelink": ("api",),  # HTTP Basic
    }


def test_providers_on_hosts_of_their_own_are_configured_as_given() -> None:
    endpoints = {
        "sparkgrid": {
            "api": "https://api.sparkgrid.example/v2",
            "token": "https://login.sparkgrid.example/oauth2/token",
            "authorize": "https://login.sparkgrid.example/oauth2/authorize?prompt=consent",
        },
        "northgas": {"api": "https://northgas.example", "token": "https://auth.northgas.example/token"},
        "clearwater": {"api": "https://api.clearwater.example"},
        "fibrelink": {"api": "http://127.0.0.1:8300/fibrelink"},  # the local cloud's sandbox is plain http
    }
    configured = settings(endpoints).PROVIDER_ENDPOINTS
    assert configured["sparkgrid"].url("token") == "https://login.sparkgrid.example/oauth2/token"
    assert configured["sparkgrid"].url("authorize") == "https://login.sparkgrid.example/oauth2/authorize?prompt=consent"
    assert configured["northgas"].url("token") == "https://auth.northgas.example/token"
    assert configured["clearwater"].url("token") is None
    assert configured["fibrelink"].url("api") == "http://127.0.0.1:8300/fibrelink"


NEEDED = [(name, key) for name, adapter in REGISTRY.items() for key in adapter.endpoints_needed()]


@pytest.mark.parametrize(("provider", "key"), NEEDED, ids=[f"{p}-{k}" for p, k in NEEDED])
def test_an_endpoint_a_registered_provider_needs_is_required(provider: str, key: str) -> None:
    endpoints = service_endpoints(ROOT)
    del endpoints[provider][key]
    message = refusal(endpoints)
    assert f"provider '{provider}' ({REGISTRY[provider].auth_type()}) has no '{key}' endpoint" in message


def test_a_provider_left_out_is_named_with_all_it_needs() -> None:
    endpoints = service_endpoints(ROOT)
    del endpoints["sparkgrid"], endpoints["clearwater"]
    message = refusal(endpoints)
    assert "provider 'sparkgrid' (oauth2_authorization_code) has no 'api', 'token', 'authorize' endpoint" in message
    assert "provider 'clearwater' (api_key) has no 'api' endpoint" in message


def test_no_endpoints_at_all_is_refused() -> None:
    with pytest.raises(ValidationError, match="PROVIDER_ENDPOINTS"):
        ProviderSettings.from_environ(OTHER_SETTINGS)
    assert "has no 'api'" in refusal({})


def test_an_unknown_provider_or_endpoint_name_is_refused() -> None:
    assert "'sparkgird' is not a registered provider" in refusal({**service_endpoints(ROOT), "sparkgird": {}})
    endpoints = service_endpoints(ROOT)
    endpoints["northgas"]["tokens"] = endpoints["northgas"].pop("token")
    assert "northgas.tokens" in refusal(endpoints)


@pytest.mark.parametrize("url", ["not a url", "ftp://files.example/bills", "/sparkgrid"])
def test_an_endpoint_that_is_not_an_http_url_is_refused(url: str) -> None:
    endpoints = service_endpoints(ROOT)
    endpoints["clearwater"]["api"] = url
    assert "clearwater.api" in refusal(endpoints)


def test_a_url_carrying_a_password_is_refused_without_repeating_it() -> None:
    endpoints = service_endpoints(ROOT)
    endpoints["northgas"]["token"] = "https://billhub:hunter2-client-secret@auth.northgas.example/token"
    message = refusal(endpoints)
    assert "may not carry a user name or password" in message
    assert "hunter2-client-secret" not in message
