"""FibreLink Broadband (internet): HTTP Basic with the customer's own username and password; page
numbers with a ``next`` link, totals as JSON numbers and ISO timestamps.

Sandbox: any username with password ``pass_good`` (``user_locked`` is locked out); a username
containing ``anomaly``, ``mismatch``, ``credit`` or ``moved`` gets that planted quirk
(sandbox.USERNAME_MARKS). Line items come as ``"items": [{"name", "total"}]``, JSON numbers like the total.
"""

from __future__ import annotations

import re
from typing import Any, NoReturn

from flask import Blueprint, Response, abort, jsonify, request, url_for

from mock_provider.query import int_arg
from mock_provider.sandbox import SANDBOX_USERNAME, Quirk, SandboxBill, quirks_in_username, seed_of
from mock_provider.state import current_state

NAME = "fibrelink"
blueprint = Blueprint(NAME, __name__)
SANDBOX_PASSWORD = "pass_good"  # noqa: S105 - a published sandbox credential
LOCKED_USERNAME = "user_locked"
ACCOUNT_NUMBER = re.compile(r"FL-\d{8}")
BASE_RANGE = (35, 95)
PAGE_SIZE = 8
STATES = {"paid": "paid", "unpaid": "due", "overdue": "overdue"}


def subscriber_id_for(username: str) -> str:
    return f"FL-{seed_of(username) % 10**8:08d}"


def quirks_for(username: str) -> frozenset[Quirk]:
    return quirks_in_username(username)


def _refuse(status: int, error: str) -> NoReturn:
    response = jsonify(error=error)
    response.status_code = status
    if status == 401:
        response.headers["WWW-Authenticate"] = f'Basic realm="{NAME}"'
    abort(response)


def _authenticated_username() -> str:
    """The Basic-auth username if the password is right; 401 otherwise, 403 for a locked account."""
    credentials = request.authorization
    if credentials is None or credentials.type != "basic":
        username, password = "", None
    else:
        username, password = credentials.username or "", credentials.password
    if (
        current_state().control.faults(NAME).auth_failure
        or not SANDBOX_USERNAME.fullmatch(username)
        or password != SANDBOX_PASSWORD
    ):
        _refuse(401, "invalid_credentials")
    if username == LOCKED_USERNAME:
        _refuse(403, "account_locked")
    return username


@blueprint.get("/api/me")
def me() -> Response:
    return jsonify(subscriber_id=subscriber_id_for(_authenticated_username()), plan="Fibre 500")


@blueprint.get("/api/invoices")
def invoices() -> Response:
    username = _authenticated_username()
    page = int_arg("page", 1, 1)
    if page is None:
        response = jsonify(error="invalid_request", message="page must be an integer >= 1")
        response.status_code = 400
        return response
    bills = current_state().bills(
        NAME, subscriber_id_for(username), currency="USD", base_range=BASE_RANGE, quirks=quirks_for(username)
    )
    has_more = page * PAGE_SIZE < len(bills)
    return jsonify(
        items=[_item(bill) for bill in bills[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]],
        links={"next": url_for(f"{NAME}.invoices", page=page + 1) if has_more else None},
    )


def _item(bill: SandboxBill) -> dict[str, Any]:
    return {
        "id": bill.bill_id,
        "total": float(bill.amount),  # a JSON number on purpose: FibreLink's quirk that clients must cope with
        "currency": bill.currency,
        "issued": f"{bill.issue_date.isoformat()}T09:00:00Z",
        "due": f"{bill.due_date.isoformat()}T23:59:59Z",
        "billing_period": f"{bill.period_start.isoformat()}/{bill.period_end.isoformat()}",
        "state": STATES[bill.status],
        "rev": bill.revision,
        "items": [{"name": line.description, "total": float(line.amount)} for line in bill.line_items],
    }
