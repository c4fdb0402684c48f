"""ClearWater Utilities (water): per-account API key in ``X-Api-Key``; page/per_page pagination.

Sandbox: any key ``cw_sandbox_<anything>`` opens a deterministic account; keys starting
``cw_sandbox_anomaly``, ``cw_sandbox_mismatch``, ``cw_sandbox_credit`` or ``cw_sandbox_moved`` get that
planted quirk; any other key is refused. Line items come as ``"line_items": [{"description", "amount"}]``,
decimal strings like the amount.
"""

from __future__ import annotations

import math
import re

from flask import Blueprint, Response, abort, jsonify, request

from mock_provider.sandbox import Quirk, seed_of
from mock_provider.state import current_state

NAME = "clearwater"
blueprint = Blueprint(NAME, __name__)
KEY_PREFIX = "cw_sandbox_"
QUIRK_KEY_PREFIXES = {
    "cw_sandbox_anomaly": Quirk.ANOMALY,
    "cw_sandbox_mismatch": Quirk.MISMATCH,
    "cw_sandbox_credit": Quirk.CREDIT,
    "cw_sandbox_moved": Quirk.CURRENCY_CHANGE,
}
ACCOUNT_NUMBER = re.compile(r"CW-\d{8}")
STATUS_NAMES = {"paid": "PAID", "unpaid": "UNPAID", "overdue": "PAST_DUE"}


def account_number_for(api_key: str) -> str:
    return f"CW-{seed_of(api_key) % 10**8:08d}"


def quirks_for(api_key: str) -> frozenset[Quirk]:
    return frozenset(quirk for prefix, quirk in QUIRK_KEY_PREFIXES.items() if api_key.startswith(prefix))


def _authenticated_key() -> str:
    """The request's sandbox API key; otherwise aborts with 401, as ClearWater does for any bad key."""
    key = request.headers.get("X-Api-Key", "")
    revoked = current_state().control.faults(NAME).auth_failure
    if revoked or not key.startswith(KEY_PREFIX) or len(key) <= len(KEY_PREFIX):
        response = jsonify(error="invalid_api_key", message="The API key is not valid.")
        response.status_code = 401
        abort(response)
    return key


@blueprint.get("/v1/account")
def account() -> Response:
    number = account_number_for(_authenticated_key())
    return jsonify(account_number=number, customer_name="Sandbox Customer", service_address="1 Reservoir Way")


@blueprint.get("/v1/bills")
def bills() -> Response | tuple[Response, int]:
    key = _authenticated_key()
    try:
        page = max(int(request.args.get("page", 1)), 1)
        per_page = min(max(int(request.args.get("per_page", 12)), 1), 50)
    except ValueError:
        return jsonify(error="bad_request", message="page and per_page must be integers"), 400
    all_bills = current_state().bills(NAME, account_number_for(key), quirks=quirks_for(key))
    chunk = all_bills[(page - 1) * per_page : page * per_page]
    return jsonify(
        bills=[
            {
                "bill_id": bill.bill_id,
                "amount_due": str(bill.amount),
                "currency": bill.currency,
                "issue_date": bill.issue_date.isoformat(),
                "due_date": bill.due_date.isoformat(),
                "status": STATUS_NAMES[bill.status],
                "service_period": {"from": bill.period_start.isoformat(), "to": bill.period_end.isoformat()},
                "revision": bill.revision,
                "line_items": [
                    {"description": line.description, "amount": str(line.amount)} for line in bill.line_items
                ],
            }
            for bill in chunk
        ],
        page=page,
        per_page=per_page,
        total_pages=max(math.ceil(len(all_bills) / per_page), 1),
    )
