"""ClearWater Utilities (water): per-account API key in ``X-Api-Key``; page/per_page pagination.

Sandbox: any key ``cw_sandbox_<anything>`` opens a deterministic account (keys starting
``cw_sandbox_anomaly`` get a planted spike); any other key is refused.
"""

from __future__ import annotations

import math
import re

from flask import Blueprint, Response, abort, jsonify, request

from mock_provider.sandbox import seed_of
from mock_provider.state import current_state

NAME = "clearwater"
blueprint = Blueprint(NAME, __name__)
KEY_PREFIX = "cw_sandbox_"
ANOMALY_KEY_PREFIX = "cw_sandbox_anomaly"
ACCOUNT_NUMBER = re.compile(r"CW-\d{8}")
STATUS_NAMES = {"paid": "PAID", "unpaid": "UNPAID", "overdue": "PAST_DUE"}


def account_number_for(api_key: str) -> str:
    return f"CW-{seed_of(api_key) % 10**8:08d}"


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
    all_bills = current_state().bills(NAME, account_number_for(key), anomaly=key.startswith(ANOMALY_KEY_PREFIX))
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
            }
            for bill in chunk
        ],
        page=page,
        per_page=per_page,
        total_pages=max(math.ceil(len(all_bills) / per_page), 1),
    )
