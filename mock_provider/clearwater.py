"""ClearWater Utilities (water): per-account API key in ``X-Api-Key``; page/per_page pagination.

Sandbox: any key ``cw_sandbox_<anything>`` opens a deterministic account; any other key is refused.
"""

from __future__ import annotations

import math

from flask import Blueprint, Response, current_app, jsonify, request

from mock_provider.sandbox import monthly_bills, sandbox_today, seed_of

blueprint = Blueprint("clearwater", __name__)
KEY_PREFIX = "cw_sandbox_"
STATUS_NAMES = {"paid": "PAID", "unpaid": "UNPAID", "overdue": "PAST_DUE"}


def account_number_for(api_key: str) -> str:
    return f"CW-{seed_of(api_key) % 10**8:08d}"


def _authenticated_account() -> str | None:
    key = request.headers.get("X-Api-Key", "")
    if not key.startswith(KEY_PREFIX) or len(key) <= len(KEY_PREFIX):
        return None
    return account_number_for(key)


def _refused() -> tuple[Response, int]:
    return jsonify(error="invalid_api_key", message="The API key is not valid."), 401


@blueprint.get("/v1/account")
def account() -> Response | tuple[Response, int]:
    number = _authenticated_account()
    if number is None:
        return _refused()
    return jsonify(account_number=number, customer_name="Sandbox Customer", service_address="1 Reservoir Way")


@blueprint.get("/v1/bills")
def bills() -> Response | tuple[Response, int]:
    number = _authenticated_account()
    if number is None:
        return _refused()
    try:
        page = max(int(request.args.get("page", 1)), 1)
        per_page = min(max(int(request.args.get("per_page", 12)), 1), 50)
    except ValueError:
        return jsonify(error="bad_request", message="page and per_page must be integers"), 400
    all_bills = monthly_bills(number, sandbox_today(current_app.config["SANDBOX_TODAY"]))
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
