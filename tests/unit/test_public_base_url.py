"""The OAuth2 callback URL comes from one deploy setting, the API's public base URL, never from the request."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from billhub.settings import LinkSettings
from mock_provider.registry import service_endpoints

OTHER_SETTINGS = {
    "TABLE_NAME": "bills",
    "PROVIDER_ENDPOINTS": json.dumps(service_endpoints("https://providers.example")),
    "CREDENTIALS_KEY_ID": "alias/credentials",
    "PROVIDER_CLIENTS_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:clients",
    "JWT_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:jwt",
    "JWT_ISSUER": "https://billhub.example/auth",
    "JWT_AUDIENCE": "billhub-api",
    "FETCH_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/fetch",
}


def settings(public_base_url: str) -> LinkSettings:
    return LinkSettings.from_environ({**OTHER_SETTINGS, "PUBLIC_BASE_URL": public_base_url})


@pytest.mark.parametrize(
    ("base", "callback"),
    [
        ("https://api.example.com", "https://api.example.com/accounts/oauth/sparkgrid/callback"),
        ("https://api.example.com/", "https://api.example.com/accounts/oauth/sparkgrid/callback"),
        ("https://api.example.com/v1", "https://api.example.com/v1/accounts/oauth/sparkgrid/callback"),
        ("https://api.example.com/v1/", "https://api.example.com/v1/accounts/oauth/sparkgrid/callback"),
        ("http://127.0.0.1:3000", "http://127.0.0.1:3000/accounts/oauth/sparkgrid/callback"),
    ],
)
def test_the_callback_is_the_route_under_the_base_with_its_path(base: str, callback: str) -> None:
    assert settings(base).oauth_callback_url("sparkgrid") == callback


@pytest.mark.parametrize(
    "base",
    [
        "",
        "api.example.com",  # not absolute
        "/v1",
        "ftp://api.example.com",
        "https://api.example.com/v1?stage=prod",
        "https://api.example.com/?",
        "https://api.example.com/v1#top",
        "https://user:secret@api.example.com",
    ],
)
def test_a_base_that_is_not_an_absolute_http_url_without_query_fragment_or_credentials_is_refused(base: str) -> None:
    with pytest.raises(ValidationError) as raised:
        settings(base)
    assert [problem["loc"][0] for problem in raised.value.errors()] == ["PUBLIC_BASE_URL"]
    assert "secret" not in str(raised.value)


def test_a_function_without_the_setting_refuses_to_start() -> None:
    with pytest.raises(ValidationError, match="PUBLIC_BASE_URL"):
        LinkSettings.from_environ(OTHER_SETTINGS)
