"""The sandbox server: provider blueprints plus the admin endpoints."""

from __future__ import annotations

import time
from datetime import date

from flask import Flask, Response, g, jsonify, request

from mock_provider import clearwater
from mock_provider.control import Control

PROVIDERS = {"clearwater": clearwater.blueprint}


def create_app(today: date | None = None, control: Control | None = None) -> Flask:
    app = Flask(__name__)
    app.config["SANDBOX_TODAY"] = today
    app.extensions["control"] = control or Control()
    for name, blueprint in PROVIDERS.items():
        app.register_blueprint(blueprint, url_prefix=f"/{name}")

    @app.before_request
    def _inject_faults() -> Response | tuple[Response, int] | None:
        provider = (request.blueprint or "").split(".")[0]
        if provider not in PROVIDERS:
            return None
        g.provider = provider
        failure, delay = app.extensions["control"].admit(provider)
        if delay:
            time.sleep(delay)
        if failure == 429:
            response = jsonify(error="rate_limited", message="Too many requests")
            response.headers["Retry-After"] = "1"
            return response, 429
        if failure is not None:
            return jsonify(error="unavailable", message="Service temporarily unavailable"), failure
        return None

    @app.after_request
    def _count(response: Response) -> Response:
        if "provider" in g:
            app.extensions["control"].record_status(g.provider, response.status_code)
        return response

    @app.get("/_admin/stats")
    def stats() -> Response:
        return jsonify(app.extensions["control"].stats())

    @app.post("/_admin/faults/<provider>")
    def set_faults(provider: str) -> tuple[Response, int] | Response:
        if provider not in PROVIDERS:
            return jsonify(error="unknown provider"), 404
        try:
            faults = app.extensions["control"].set_faults(provider, **(request.get_json(force=True) or {}))
        except (TypeError, ValueError) as error:
            return jsonify(error=str(error)), 400
        return jsonify(faults.__dict__)

    @app.post("/_admin/reset")
    def reset() -> Response:
        app.extensions["control"].reset()
        return jsonify(status="reset")

    return app
