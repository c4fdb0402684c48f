"""The simulated providers in one place, so the app, the fault layer, the admin endpoints and the local
cloud (which configures the service with the sandbox's endpoints and client registrations) agree."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from flask import Blueprint

from mock_provider import clearwater, fibrelink, northgas, sparkgrid
from mock_provider.oauth import RegisteredClient


@dataclass(frozen=True)
class Provider:
    blueprint: Blueprint
    account_number: re.Pattern[str]  # what ``/_admin/revise`` accepts as this provider's account
    # OAuth: the service's registration here, and the endpoints (under the provider's mount) it calls.
    client: RegisteredClient | None = None
    token_path: str | None = None
    authorize_path: str | None = None

    @property
    def issues_tokens(self) -> bool:
        """Has a token store and the admin expire/revoke endpoints."""
        return self.client is not None


PROVIDERS: Mapping[str, Provider] = MappingProxyType(
    {
        sparkgrid.NAME: Provider(
            sparkgrid.blueprint,
            sparkgrid.ACCOUNT_NUMBER,
            sparkgrid.CLIENT,
            token_path=sparkgrid.TOKEN_PATH,
            authorize_path=sparkgrid.AUTHORIZE_PATH,
        ),
        northgas.NAME: Provider(northgas.blueprint, northgas.ACCOUNT_NUMBER, northgas.CLIENT, northgas.TOKEN_PATH),
        clearwater.NAME: Provider(clearwater.blueprint, clearwater.ACCOUNT_NUMBER),
        fibrelink.NAME: Provider(fibrelink.blueprint, fibrelink.ACCOUNT_NUMBER),
    }
)


def mount_point(name: str) -> str:
    """Where the sandbox serves a provider: every one of them under one root, ``/<name>``."""
    return f"/{name}"


def service_endpoints(root_url: str) -> dict[str, dict[str, str]]:
    """The service's ``ProviderEndpoints`` for this sandbox served at ``root_url``."""
    endpoints: dict[str, dict[str, str]] = {}
    for name, provider in PROVIDERS.items():
        base = f"{root_url.rstrip('/')}{mount_point(name)}"
        endpoints[name] = {"api": base}
        if provider.token_path is not None:
            endpoints[name]["token"] = f"{base}{provider.token_path}"
        if provider.authorize_path is not None:
            endpoints[name]["authorize"] = f"{base}{provider.authorize_path}"
    return endpoints


def service_clients() -> dict[str, dict[str, str]]:
    """The service's ``ProviderOAuthClients``: its (public, sandbox-only) registration at each OAuth provider."""
    return {
        name: {"client_id": provider.client.client_id, "client_secret": provider.client.client_secret}
        for name, provider in PROVIDERS.items()
        if provider.client is not None
    }


def service_parameters(root_url: str, *, public_base_url: str) -> dict[str, str]:
    """The template parameters that point the service at this sandbox, served at ``root_url``, and the
    sandbox back at the service (its OAuth2 redirect URIs are under ``public_base_url``, where the local
    gateway serves the API): what only a laptop passes."""
    return {
        "ProviderEndpoints": json.dumps(service_endpoints(root_url)),
        "ProviderOAuthClients": json.dumps(service_clients()),
        "PublicBaseUrl": public_base_url,
    }
