"""``/_admin``: steer and inspect one sandbox (faults, counters, tokens, bill revisions). Never counted
as provider traffic and never subject to faults."""

from __future__ import annotations

import re
from dataclasses import asdict
from decimal import Decimal
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from mock_provider import persistence
from mock_provider.registry import PROVIDERS
from mock_provider.sandbox import CENT
from mock_provider.state import current_state
from mock_provider.tokens import TokenStore

blueprint = Blueprint("admin", __name__)
AMOUNT = re.compile(r"\d{1,9}(\.\d{1,2})?")


def _error(status: int, message: str) -> tuple[Response, int]:
    return jsonify(error=message), status


def _json_object() -> dict[str, Any] | None:
    """The request body as a JSON object (an empty body counts as ``{}``); None if it is anything else."""
    if not request.get_data():
        return {}
    body = request.get_json(force=True, silent=True)
    return body if isinstance(body, dict) else None


@blueprint.get("/stats")
def stats() -> Response:
    return jsonify(current_state().control.stats())


@blueprint.get("/persistence")
def persisted() -> Response:
    """Where the sandbox keeps its memory across restarts, what it restored, whether changes are unsaved."""
    sandbox_file: persistence.SandboxFile | None = current_app.extensions.get(persistence.EXTENSION)
    return jsonify(sandbox_file.status() if sandbox_file is not None else {"file": None})


@blueprint.post("/stats/reset")
def reset_stats() -> Response:
    current_state().control.reset_counters()
    return jsonify(status="counters reset")


@blueprint.post("/faults/<provider>")
def set_faults(provider: str) -> Response | tuple[Response, int]:
    if provider not in PROVIDERS:
        return _error(404, "unknown provider")
    changes = _json_object()
    if changes is None:
        return _error(400, "the body must be a JSON object of faults")
    try:
        faults = current_state().control.set_faults(provider, **changes)
    except ValueError as error:
        return _error(400, str(error))
    return jsonify(asdict(faults))


@blueprint.post("/reset")
def reset() -> Response:
    current_state().reset()
    return jsonify(status="reset")


def _token_store(provider: str) -> TokenStore | None:
    return current_state().tokens.get(provider)


@blueprint.post("/tokens/<provider>/expire")
def expire_tokens(provider: str) -> Response | tuple[Response, int]:
    store = _token_store(provider)
    if store is None:
        return _error(404, "not a provider that issues OAuth tokens")
    return jsonify(expired=store.expire_access_tokens())


@blueprint.post("/tokens/<provider>/revoke")
def revoke_tokens(provider: str) -> Response | tuple[Response, int]:
    store = _token_store(provider)
    if store is None:
        return _error(404, "not a provider that issues OAuth tokens")
    return jsonify(revoked=store.revoke_all())


@blueprint.post("/revise/<provider>")
def revise(provider: str) -> Response | tuple[Response, int]:
    """Re-issues a bill with a new amount, as providers do after a meter correction."""
    if provider not in PROVIDERS:
        return _error(404, "unknown provider")
    body = _json_object() or {}
    account, bill_id, amount = body.get("account"), body.get("bill_id"), body.get("amount")
    if not (isinstance(account, str) and isinstance(bill_id, str) and isinstance(amount, str)):
        return _error(400, "account, bill_id and amount are required strings")
    if not AMOUNT.fullmatch(amount):
        return _error(400, "amount must be a decimal string such as 123.45")
    if not PROVIDERS[provider].account_number.fullmatch(account):
        return _error(404, f"no such {provider} account")
    new_amount = Decimal(amount).quantize(CENT)
    revision = current_state().revise(provider, account, bill_id, new_amount)
    if revision is None:
        return _error(404, "no such bill on that account")
    return jsonify(bill_id=bill_id, amount=str(new_amount), revision=revision)
