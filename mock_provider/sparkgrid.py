"""SparkGrid Energy (electricity): OAuth 2 authorization code flow with rotating refresh tokens,
cursor pagination and amounts in integer minor units (cents).

Sandbox: any username links (``user_denied`` refuses consent); a username containing ``anomaly``,
``mismatch``, ``credit`` or ``moved`` gets that planted quirk (sandbox.USERNAME_MARKS). Line items come
as ``"lines": [{"label", "amount_minor"}]``, integer minor units like the amount.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, NoReturn
from urllib.parse import urlencode, urlsplit, urlunsplit

from flask import Blueprint, Response, abort, jsonify, redirect, request, url_for
from werkzeug.wrappers import Response as BaseResponse

from mock_provider.oauth import (
    SANDBOX_CLIENT_ID,
    RegisteredClient,
    bearer_subject,
    invalid_client,
    oauth_error,
    token_answer,
)
from mock_provider.query import int_arg
from mock_provider.sandbox import SANDBOX_USERNAME, Quirk, SandboxBill, quirks_in_username, seed_of
from mock_provider.state import current_state
from mock_provider.tokens import IssuedTokens, TokenStore

NAME = "sparkgrid"
blueprint = Blueprint(NAME, __name__)
CLIENT = RegisteredClient(SANDBOX_CLIENT_ID, "sparkgrid-sandbox-secret")
AUTHORIZE_PATH = "/oauth/authorize"
TOKEN_PATH = "/oauth/token"  # noqa: S105 - a path, not a secret
ACCOUNT_NUMBER = re.compile(r"SG-\d{8}")
SCOPE = "bills:read"
DENYING_USERNAME = "user_denied"
BASE_RANGE = (60, 180)
DEFAULT_LIMIT, MAX_LIMIT = 6, 24
STATES = {"paid": "settled", "unpaid": "open", "overdue": "late"}
# Parameters of an authorization request that the consent form carries through to its POST.
AUTHORIZATION_PARAMS = ("response_type", "client_id", "redirect_uri", "state", "scope")

CONSENT_PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>SparkGrid Energy sandbox: allow access</title></head>
<body>
<h1>SparkGrid Energy (sandbox)</h1>
<p>Allow <strong>{client_id}</strong> to read your statements?</p>
<form method="post" action="{action}">
{hidden_fields}
<label>Username <input name="username" value="sandbox_user"></label>
<button type="submit" name="decision" value="approve">Approve</button>
<button type="submit" name="decision" value="deny">Deny</button>
</form>
</body>
</html>
"""


def customer_id_for(username: str) -> str:
    return f"SG-{seed_of(username) % 10**8:08d}"


def quirks_for(username: str) -> frozenset[Quirk]:
    return quirks_in_username(username)


def _tokens() -> TokenStore:
    return current_state().tokens[NAME]


@blueprint.get(AUTHORIZE_PATH)
def authorize() -> BaseResponse:
    """With ``login_hint`` the sandbox decides at once; without it, a human gets a consent page."""
    _check_authorization_request(request.args)
    login_hint = request.args.get("login_hint")
    if login_hint is not None:
        return _decide(request.args, login_hint, approved=True)
    hidden_fields = "\n".join(
        f'<input type="hidden" name="{name}" value="{html.escape(request.args[name])}">'
        for name in AUTHORIZATION_PARAMS
        if name in request.args
    )
    page = CONSENT_PAGE.format(
        client_id=html.escape(CLIENT.client_id),
        action=url_for(f"{NAME}.decide_on_consent_page"),
        hidden_fields=hidden_fields,
    )
    return Response(page, mimetype="text/html")


@blueprint.post(AUTHORIZE_PATH)
def decide_on_consent_page() -> BaseResponse:
    _check_authorization_request(request.form)
    decision = request.form.get("decision")
    if decision not in ("approve", "deny"):
        _invalid_request("decision must be approve or deny")
    return _decide(request.form, request.form.get("username", ""), approved=decision == "approve")


def _check_authorization_request(params: Mapping[str, str]) -> None:
    if params.get("client_id") != CLIENT.client_id:
        _invalid_request("unknown client_id")
    try:
        redirect_uri = urlsplit(params.get("redirect_uri", ""))
    except ValueError:
        _invalid_request("redirect_uri must be an http or https URL")
    if redirect_uri.scheme not in ("http", "https") or not redirect_uri.netloc:
        _invalid_request("redirect_uri must be an http or https URL")
    if params.get("response_type") != "code":
        _invalid_request("response_type must be code")


def _decide(params: Mapping[str, str], username: str, *, approved: bool) -> BaseResponse:
    """Sends the browser back to the client with a code, or with ``access_denied``."""
    outcome: dict[str, str]
    if not approved:
        outcome = {"error": "access_denied"}
    elif not SANDBOX_USERNAME.fullmatch(username):
        _invalid_request(f"username must match {SANDBOX_USERNAME.pattern}")
    elif username == DENYING_USERNAME:
        outcome = {"error": "access_denied"}
    else:
        outcome = {"code": _tokens().issue_code(CLIENT.client_id, params["redirect_uri"], username)}
    if "state" in params:
        outcome["state"] = params["state"]
    return redirect(_with_query(params["redirect_uri"], outcome), code=302)


def _with_query(url: str, params: Mapping[str, str]) -> str:
    parts = urlsplit(url)
    extra = urlencode(params)
    return urlunsplit(parts._replace(query=f"{parts.query}&{extra}" if parts.query else extra))


@blueprint.post(TOKEN_PATH)
def token() -> Response:
    if not CLIENT.is_presented():
        return invalid_client(NAME)
    faults = current_state().control.faults(NAME)
    store = _tokens()
    issued: IssuedTokens | None
    grant_type = request.form.get("grant_type")
    if grant_type == "authorization_code":
        code, redirect_uri = request.form.get("code", ""), request.form.get("redirect_uri", "")
        username = store.redeem_code(code, CLIENT.client_id, redirect_uri)
        issued = (
            None
            if username is None
            else store.issue(username, faults.token_ttl_seconds, with_refresh=True, chars=faults.token_chars)
        )
    elif grant_type == "refresh_token":
        refresh_token = request.form.get("refresh_token", "")
        issued = store.refresh(
            refresh_token, faults.token_ttl_seconds, rotate=faults.rotate_refresh_tokens, chars=faults.token_chars
        )
    else:
        return oauth_error("unsupported_grant_type")
    if issued is None:
        return oauth_error("invalid_grant")
    return token_answer(issued, scope=SCOPE)


def _authenticated_username() -> str:
    return bearer_subject(_tokens(), refuse_all=current_state().control.faults(NAME).auth_failure)


@blueprint.get("/api/v2/customer")
def customer() -> Response:
    username = _authenticated_username()
    return jsonify(customer_id=customer_id_for(username), name="Sandbox Customer", premises="12 Dynamo Street")


@blueprint.get("/api/v2/statements")
def statements() -> Response:
    username = _authenticated_username()
    bills = current_state().bills(
        NAME, customer_id_for(username), currency="USD", base_range=BASE_RANGE, quirks=quirks_for(username)
    )
    limit = int_arg("limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    if limit is None:
        _invalid_request(f"limit must be an integer from 1 to {MAX_LIMIT}")
    cursor = request.args.get("cursor")
    offset = 0 if cursor is None else _offset_in(cursor, len(bills))
    end = offset + limit
    return jsonify(
        data=[_statement(bill) for bill in bills[offset:end]],
        next_cursor=_cursor_for(end) if end < len(bills) else None,
    )


def _minor(amount: Decimal) -> int:
    return int(amount * 100)  # every sandbox currency has cents


def _statement(bill: SandboxBill) -> dict[str, Any]:
    return {
        "statement_id": bill.bill_id,
        "amount_due_minor": _minor(bill.amount),
        "currency": bill.currency,
        "issued_at": bill.issue_date.isoformat(),
        "due_by": bill.due_date.isoformat(),
        "period": {"start": bill.period_start.isoformat(), "end": bill.period_end.isoformat()},
        "state": STATES[bill.status],
        "version": bill.revision,
        "lines": [{"label": line.description, "amount_minor": _minor(line.amount)} for line in bill.line_items],
    }


def _cursor_for(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode().rstrip("=")


def _offset_in(cursor: str, size: int) -> int:
    """The offset an opaque cursor of ours stands for; a 400 for anything we did not hand out."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except ValueError:  # bad base64 or not UTF-8
        _invalid_request("cursor is not valid")
    label, _, number = text.partition(":")
    if label != "offset" or not (number.isascii() and number.isdigit()) or not 0 < int(number) < size:
        _invalid_request("cursor is not valid")
    return int(number)


def _invalid_request(description: str) -> NoReturn:
    abort(oauth_error("invalid_request", 400, description))
