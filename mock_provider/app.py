"""The sandbox server: the provider blueprints behind a fault layer, plus the admin endpoints."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import date

from flask import Flask, Response, g, jsonify, request

from mock_provider import admin
from mock_provider.control import Control, Malformation
from mock_provider.registry import PROVIDERS, mount_point
from mock_provider.revisions import Revisions
from mock_provider.state import EXTENSION, SandboxState, current_state
from mock_provider.tokens import TokenStore

# Path segments (after the provider's prefix) of the endpoints that serve data, as opposed to OAuth.
DATA_SEGMENTS = ("api", "v1")
WRONG_SHAPE_BODY = b'{"unexpected": true}'


def create_app(today: date | Callable[[], date] | None = None, control: Control | None = None) -> Flask:
    """One sandbox; all its state lives in this app, so tests can run any number side by side.

    ``today`` pins the sandbox's date, or is the clock it reads it from (a test's clock, shared with
    the service it drives); ``control`` lets a test keep a handle on faults and the clock."""
    app = Flask(__name__)
    control = control if control is not None else Control()
    app.extensions[EXTENSION] = SandboxState(
        control=control,
        revisions=Revisions(),
        tokens={name: TokenStore(control.now) for name, provider in PROVIDERS.items() if provider.issues_tokens},
        pinned_today=today,
    )
    for name, provider in PROVIDERS.items():
        app.register_blueprint(provider.blueprint, url_prefix=mount_point(name))
    app.register_blueprint(admin.blueprint, url_prefix="/_admin")
    app.before_request(_inject_faults)
    app.after_request(_malform_and_count)
    return app


def _failure(status: int, error: str, message: str) -> Response:
    response = jsonify(error=error, message=message)
    response.status_code = status
    return response


def _inject_faults() -> Response | None:
    """Answers instead of the provider when a fault says so; otherwise delays and lets it serve."""
    provider = request.blueprint
    if provider is None or provider not in PROVIDERS:
        return None
    g.provider = provider
    admission = current_state().control.admit(provider)
    if admission.failure == 429:
        response = _failure(429, "rate_limited", "Too many requests")
        response.headers["Retry-After"] = str(admission.retry_after_seconds)
        return response
    time.sleep(admission.delay_seconds)
    if admission.failure == 504:
        time.sleep(admission.hang_seconds)
        return _failure(504, "gateway_timeout", "The request timed out")
    if admission.failure is not None:
        return _failure(admission.failure, "unavailable", "Service temporarily unavailable")
    return None


def _malform_and_count(response: Response) -> Response:
    provider: str | None = g.get("provider")
    if provider is None:
        return response
    control = current_state().control
    if response.status_code == 200 and response.is_json and request.path.split("/")[2] in DATA_SEGMENTS:
        malformation = control.malformation(provider)
        if malformation is Malformation.TRUNCATED:
            body = response.get_data()
            response.set_data(body[: len(body) // 2])
        elif malformation is Malformation.WRONG_SHAPE:
            response.set_data(WRONG_SHAPE_BODY)
    control.record_status(provider, response.status_code)
    return response
