"""When the daily reminders go out: apart from ``billhub.reminders`` so that registration and login,
which file a user on the reminder schedule, import nothing else of it."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

# Reminders go out at this hour, UTC, each day.
REMINDER_HOUR = 8


def next_reminder_at(now: datetime) -> datetime:
    """The first 08:00 UTC after ``now``."""
    today = datetime.combine(now.astimezone(UTC).date(), time(REMINDER_HOUR), UTC)
    return today if today > now else today + timedelta(days=1)
