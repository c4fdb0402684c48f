"""The demo user ``make run`` seeds: one account at every sandbox provider, linked through the public
API exactly as a client would (the OAuth2 provider through its authorize redirect). Seeding again (a
restart that kept its state) links only what the demo user does not have yet."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import httpx

DEMO_EMAIL = "demo@billhub.example"
DEMO_PASSWORD = "demo-password-123"  # noqa: S105 - the documented local demo login
# Sandbox credentials documented in mock_provider/README.md.
DEMO_CREDENTIALS: dict[str, dict[str, str]] = {
    "northgas": {"account_number": "NG10002000", "postcode": "NG1 1AA"},
    # A planted spike two months back, so the demo's insights have an unusual bill to show.
    "clearwater": {"api_key": "cw_sandbox_anomaly_demo"},
    "fibrelink": {"username": "demo", "password": "pass_good"},
}
DEMO_OAUTH_LOGINS = {"sparkgrid": "demo"}


def link_with_oauth(
    client: httpx.Client, headers: dict[str, str], provider: str, login: str, account_id: str | None = None
) -> httpx.Response:
    """Walks the OAuth2 flow as a browser would: start, the provider's authorize page (the sandbox
    approves ``login_hint`` at once), then the callback the provider redirects to."""
    params = {"account_id": account_id} if account_id else {}
    start = client.get(f"/accounts/oauth/{provider}/start", headers=headers, params=params)
    start.raise_for_status()
    # The sandbox approves at once for a ``login_hint``, added to the authorize URL's own query.
    authorize_url = f"{start.json()['authorize_url']}&{urlencode({'login_hint': login})}"
    consent = httpx.get(authorize_url, follow_redirects=False)
    if consent.status_code != 302:
        raise RuntimeError(f"the provider's authorize page answered {consent.status_code}: {consent.text[:200]}")
    return client.get(consent.headers["Location"])


def seed(gateway_url: str) -> dict[str, Any]:
    """Registers the demo user (unless they exist) and links each sandbox provider they have not linked yet.

    Safe to run again on a local cloud that kept its state: the user and their accounts are found, nothing is
    duplicated. Each link already fetches its account once, so no manual refresh is started: the demo user's
    own ``POST /bills/refresh`` is free from the first minute. Returns the token and, per provider, the link's
    status (``"already linked"`` for an account found).
    """
    with httpx.Client(base_url=gateway_url, timeout=30) as client:
        registered = client.post("/auth/register", json={"email": DEMO_EMAIL, "password": DEMO_PASSWORD})
        if registered.status_code not in (201, 409):  # 409: registered by an earlier run
            registered.raise_for_status()
        login = client.post("/auth/login", json={"email": DEMO_EMAIL, "password": DEMO_PASSWORD})
        login.raise_for_status()
        token = login.json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        accounts = client.get("/accounts", headers=headers)
        accounts.raise_for_status()
        present = {account["provider"] for account in accounts.json()["accounts"]}
        linked: dict[str, int | str] = {}
        for provider, credentials in DEMO_CREDENTIALS.items():
            if provider in present:
                linked[provider] = "already linked"
                continue
            answer = client.post(
                "/accounts/link", headers=headers, json={"provider": provider, "credentials": credentials}
            )
            linked[provider] = answer.status_code
        for provider, login_name in DEMO_OAUTH_LOGINS.items():
            linked[provider] = (
                "already linked"
                if provider in present
                else link_with_oauth(client, headers, provider, login_name).status_code
            )
        return {"token": token, "linked": linked}
