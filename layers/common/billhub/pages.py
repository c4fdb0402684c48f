"""The small HTML pages the OAuth2 callback answers a browser with, instead of JSON it cannot use.

The provider sends the person's browser, not our client, back to the callback; a browser asks for
``text/html`` before anything else, an API client for JSON (or for anything). Every value a page shows
is escaped, and the page carries a Content-Security-Policy of its own that allows its inline style
and nothing else.
"""

from __future__ import annotations

import html
from http import HTTPStatus
from typing import TYPE_CHECKING

from aws_lambda_powertools.event_handler import Response

from billhub.catalog import CATALOG

if TYPE_CHECKING:
    from billhub.accounts import AccountView

HTML = "text/html; charset=utf-8"
# The shared ``default-src 'none'`` with the page's own <style> allowed: no script, image, font or frame.
PAGE_SECURITY_POLICY = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"
_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:34rem;margin:4rem auto;padding:0 1rem;"
    "line-height:1.5;color:#1b1b1b}h1{font-size:1.4rem}.next{font-weight:600}.code{color:#666;font-size:.85rem}"
)


def prefers_html(accept: str | None) -> bool:
    """Whether a request's ``Accept`` header ranks ``text/html`` above ``application/json`` (RFC 9110
    12.5.1: quality, then specificity). A tie, ``*/*`` or no header at all is an API client: JSON."""
    if not accept:
        return False
    # werkzeug is imported by the callback alone, never at the link function's cold start.
    from werkzeug.datastructures import MIMEAccept
    from werkzeug.http import parse_accept_header

    # best_match returns the first of equally good matches, so JSON wins a tie.
    return parse_accept_header(accept, MIMEAccept).best_match(["application/json", "text/html"]) == "text/html"


def _display_name(provider: str) -> str:
    entry = CATALOG.get(provider)
    return entry.display_name if entry is not None else provider


def _page(status: int, title: str, paragraphs: list[str], next_step: str, code: str | None = None) -> Response[str]:
    """A page from plain text: every piece is escaped here, so no caller can inject markup."""
    body = "".join(f"<p>{html.escape(text)}</p>" for text in paragraphs)
    reference = f'<p class="code">Reference: {html.escape(code)}</p>' if code else ""
    page = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)} - billhub</title><style>{_STYLE}</style></head>"
        f'<body><main><h1>{html.escape(title)}</h1>{body}<p class="next">{html.escape(next_step)}</p>'
        f"{reference}</main></body></html>"
    )
    return Response(
        status_code=status,
        content_type=HTML,
        body=page,
        headers={"Content-Security-Policy": PAGE_SECURITY_POLICY},
    )


def oauth_linked(provider: str, account: AccountView, created: bool) -> Response[str]:
    """The page after a successful callback: a new account (201) or a repaired one (200)."""
    name = _display_name(provider)
    label = f"{account.nickname} ({account.external_ref})" if account.nickname else account.external_ref
    if created:
        return _page(
            HTTPStatus.CREATED,
            f"{name} account linked",
            [f"Your {name} account {label} is now linked to billhub.", "Its bills are being fetched now."],
            "You can close this window and go back to billhub: the bills appear there within a minute.",
        )
    return _page(
        HTTPStatus.OK,
        f"{name} account reconnected",
        [f"Your {name} account {label} is connected again; its bills were kept.", "A fresh fetch has started."],
        "You can close this window and go back to billhub.",
    )


def oauth_failed(provider: str, status: int, code: str, message: str) -> Response[str]:
    """The page after a callback that linked nothing, with the error's status, and what to do next."""
    name = _display_name(provider)
    if code == "oauth_denied":
        return _page(
            status,
            f"{name} did not grant access",
            [f"Nothing was linked: the sign-in at {name} was cancelled or access was refused."],
            f"To link the account, start again from billhub and approve access at {name}.",
            code,
        )
    if code == "invalid_oauth_state":
        return _page(
            status,
            "This link request has expired",
            [message, "A link request works once and for 10 minutes."],
            f"Start linking your {name} account again from billhub.",
            code,
        )
    if status == HTTPStatus.SERVICE_UNAVAILABLE:
        next_step = "Nothing was linked. Start linking again from billhub in a few minutes."
    elif status == HTTPStatus.CONFLICT:
        next_step = "Nothing was changed. Go back to billhub to see your linked accounts."
    else:
        next_step = "Nothing was linked. Start linking again from billhub."
    return _page(status, "The account could not be linked", [message], next_step, code)
