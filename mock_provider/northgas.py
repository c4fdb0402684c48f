"""NorthGas (gas): an OAuth 2 client-credentials service token plus the customer's account number and
postcode on every call; offset/limit pagination, decimal-string amounts and DD/MM/YYYY dates.

Sandbox: any account number ``NG`` + 6 to 10 digits with postcode ``NG1 1AA``; numbers ending ``99``
get a planted spike, ``98`` line items that do not add up, ``97`` a credit note and ``96`` a move from
euros. Line items come as ``"charges": [{"description", "amount"}]``, decimal strings like the amount.
"""

from __future__ import annotations

import re
from typing import Any, NoReturn

from flask import Blueprint, Response, abort, jsonify, request

from mock_provider.oauth import (
    SANDBOX_CLIENT_ID,
    RegisteredClient,
    bearer_subject,
    invalid_client,
    oauth_error,
    token_answer,
)
from mock_provider.query import int_arg
from mock_provider.sandbox import Quirk, SandboxBill
from mock_provider.state import current_state

NAME = "northgas"
blueprint = Blueprint(NAME, __name__)
CLIENT = RegisteredClient(SANDBOX_CLIENT_ID, "northgas-sandbox-secret")
TOKEN_PATH = "/oauth/token"  # noqa: S105 - a path, not a secret
ACCOUNT_NUMBER = re.compile(r"NG\d{6,10}")
SANDBOX_POSTCODE = "NG11AA"  # "NG1 1AA", compared without spaces and case
QUIRK_SUFFIXES = {"99": Quirk.ANOMALY, "98": Quirk.MISMATCH, "97": Quirk.CREDIT, "96": Quirk.CURRENCY_CHANGE}
BASE_RANGE = (40, 140)
DEFAULT_LIMIT, MAX_LIMIT = 10, 50
STATUSES = {"paid": "PAID", "unpaid": "OUTSTANDING", "overdue": "IN_ARREARS"}


def quirks_for(account_number: str) -> frozenset[Quirk]:
    return frozenset(quirk for suffix, quirk in QUIRK_SUFFIXES.items() if account_number.endswith(suffix))


@blueprint.post(TOKEN_PATH)
def token() -> Response:
    if not CLIENT.is_presented():
        return invalid_client(NAME)
    if request.form.get("grant_type") != "client_credentials":
        return oauth_error("unsupported_grant_type")
    ttl_seconds = current_state().control.faults(NAME).token_ttl_seconds
    return token_answer(current_state().tokens[NAME].issue(CLIENT.client_id, ttl_seconds, with_refresh=False))


def _authorise(account_number: str) -> None:
    """A live service token first (401), then the account and postcode together (403, never saying which)."""
    state = current_state()
    bearer_subject(state.tokens[NAME], refuse_all=state.control.faults(NAME).auth_failure)
    postcode = "".join(request.headers.get("X-Customer-Postcode", "").split()).upper()
    if not ACCOUNT_NUMBER.fullmatch(account_number) or postcode != SANDBOX_POSTCODE:
        response = jsonify(error="account_access_denied")
        response.status_code = 403
        abort(response)


@blueprint.get("/api/accounts/<account_number>")
def account(account_number: str) -> Response:
    _authorise(account_number)
    return jsonify(account_number=account_number, holder="Sandbox Customer", tariff="Standard Variable")


@blueprint.get("/api/accounts/<account_number>/invoices")
def invoices(account_number: str) -> Response:
    _authorise(account_number)
    offset = int_arg("offset", 0, 0)
    limit = int_arg("limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    if offset is None or limit is None:
        _bad_request(f"offset must be an integer >= 0 and limit an integer from 1 to {MAX_LIMIT}")
    bills = current_state().bills(
        NAME,
        account_number,
        currency="GBP",
        base_range=BASE_RANGE,
        quirks=quirks_for(account_number),
    )
    return jsonify(
        invoices=[_invoice(bill) for bill in bills[offset : offset + limit]],
        offset=offset,
        limit=limit,
        total=len(bills),
    )


def _invoice(bill: SandboxBill) -> dict[str, Any]:
    return {
        "invoice_no": bill.bill_id,
        "amount": str(bill.amount),
        "currency": bill.currency,
        "invoice_date": f"{bill.issue_date:%d/%m/%Y}",
        "payment_due": f"{bill.due_date:%d/%m/%Y}",
        "supply_from": f"{bill.period_start:%d/%m/%Y}",
        "supply_to": f"{bill.period_end:%d/%m/%Y}",
        "payment_status": STATUSES[bill.status],
        "revision": bill.revision,
        "charges": [{"description": line.description, "amount": str(line.amount)} for line in bill.line_items],
    }


def _bad_request(message: str) -> NoReturn:
    response = jsonify(error="invalid_request", message=message)
    response.status_code = 400
    abort(response)
