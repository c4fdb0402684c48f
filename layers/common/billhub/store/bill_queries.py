"""How a page of bills is asked for: the query, its opaque cursor (where the last page ended in LSI1) and
the status filter, derived from the rule of what status a bill shows."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import date
from typing import Any

from billhub import keys
from billhub.models import BillStatus
from billhub.store.base import _to_item
from billhub.store.errors import MalformedCursor


@dataclass(frozen=True)
class BillQuery:
    """What ``GET /bills`` asks for: filters, the page size and where the previous page ended."""

    today: date
    limit: int
    provider: str | None = None
    status: BillStatus | None = None
    issued_from: date | None = None
    issued_to: date | None = None
    cursor: str | None = None
    # Accounts being deleted, whose bills are still being removed.
    hidden_accounts: frozenset[str] = frozenset()


def cursor_of(item: dict[str, Any]) -> str:
    """An opaque cursor: where the page ended in LSI1. The partition is never in it; it is the caller's."""
    # UTF-8 rather than \u escapes, so a cursor stays within ``bills.MAX_CURSOR_LENGTH`` whatever the ids.
    raw = json.dumps([item["LSI1SK"], item["SK"]], separators=(",", ":"), ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def start_key_of(user_id: str, cursor: str) -> dict[str, Any]:
    try:
        issue_key, sort_key = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, TypeError, binascii.Error) as error:
        raise MalformedCursor() from error
    if not (
        isinstance(issue_key, str)
        and isinstance(sort_key, str)
        and keys.is_bill_issue_sk(issue_key)
        and keys.is_bill_sk(sort_key)
    ):
        raise MalformedCursor()
    return _to_item({"PK": keys.user_pk(user_id), "SK": sort_key, "LSI1SK": issue_key})


def status_filter(status: BillStatus, today: date, values: dict[str, Any]) -> str:
    """The filter of the bills shown with ``status`` on ``today``, derived from ``BillStatus.shown``
    itself (each stored status, past due or not), so that the filter and what is shown never drift apart."""
    terms = []
    for stored in BillStatus:
        when = [past_due for past_due in (False, True) if stored.shown(past_due) is status]
        if not when:
            continue
        values[f":{stored.value}"] = stored.value
        term = f"#status = :{stored.value}"
        if len(when) == 1:  # shown with ``status`` only when past due, or only when not
            # Past due is ``due_on < today``, as in ``bills.effective_status`` (ISO dates order as strings).
            term = f"({term} AND due_on {'<' if when[0] else '>='} :today)"
            values[":today"] = today.isoformat()
        terms.append(term)
    return terms[0] if len(terms) == 1 else f"({' OR '.join(terms)})"
