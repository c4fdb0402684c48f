"""The mail the local cloud's SES (moto) took: ``GET /_localcloud/emails`` on the moto server answers it, so a
person sees what a user would get (the daily reminders: ``billhub.reminders``).

moto keeps each sent message in its SES backend (``sent_messages``), a ``SendRawEmail`` as its MIME text
and a ``SendEmail`` with one body only, and not when it was sent: ``record_send_times`` notes that on
each message as it is taken, so the time is kept with it across restarts (``localcloud.moto_state``
saves moto's backends, SES's mail included).
"""

from __future__ import annotations

import email
import email.policy
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

EMAILS_PATH = "/_localcloud/emails"


def record_send_times() -> None:
    """Makes moto's SES backend note when it takes each message (its id -> an ISO 8601 time, UTC)."""
    from moto.ses.models import SESBackend

    for name in ("send_email", "send_raw_email", "send_templated_email"):
        original = getattr(SESBackend, name)
        if getattr(original, "_records_send_time", False):
            continue

        def recording(self: Any, *args: Any, _original: Callable[..., Any] = original, **kwargs: Any) -> Any:
            message = _original(self, *args, **kwargs)
            message.localcloud_sent_at = datetime.now(UTC).isoformat()
            return message

        recording._records_send_time = True  # type: ignore[attr-defined]
        setattr(SESBackend, name, recording)


def _parts(raw: str) -> tuple[str, str, str | None, str | None]:
    """(to, subject, text, html) of a MIME message."""
    message = email.message_from_string(raw, policy=email.policy.default)
    text = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    return (
        str(message.get("To", "")),
        str(message.get("Subject", "")),
        text.get_content() if text is not None else None,
        html.get_content() if html is not None else None,
    )


def as_json(messages: Iterable[Any]) -> list[dict[str, Any]]:
    """moto's sent messages as ``[{"to", "subject", "text", "html", "sent_at"}]``, newest first."""
    found = []
    for message in messages:
        if hasattr(message, "raw_data"):
            to, subject, text, html = _parts(message.raw_data)
        else:
            to = ", ".join(message.destinations.get("ToAddresses", []))
            subject, text, html = message.subject, None, message.body
        sent_at = getattr(message, "localcloud_sent_at", None)
        found.append({"to": to, "subject": subject, "text": text, "html": html, "sent_at": sent_at})
    # Newest first: by the time noted, those sent in the same instant latest first.
    order = sorted(range(len(found)), key=lambda index: (found[index]["sent_at"] or "", index), reverse=True)
    return [found[index] for index in order]


def sent_emails() -> list[dict[str, Any]]:
    """Every message every account and region of moto's SES took, newest first (in each, as sent)."""
    from moto.ses.models import ses_backends

    messages: list[Any] = []
    for regions in list(ses_backends.values()):
        for backend in list(regions.values()):
            messages += backend.sent_messages
    return as_json(messages)


class EmailsView:
    """Answers ``GET /_localcloud/emails``; passes everything else on."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self._app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != EMAILS_PATH or environ.get("REQUEST_METHOD") != "GET":
            return self._app(environ, start_response)
        import json

        body = json.dumps(sent_emails(), ensure_ascii=False).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]
