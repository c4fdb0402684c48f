"""What the data layer raises: what happened to the items, in its own words. The domain decides what
each means to a caller (an HTTP status, a message a person reads); nothing here knows of either."""

from __future__ import annotations


class ConcurrentUpdate(Exception):
    """Someone else changed the same items first; the caller retries from a fresh read."""


class AlreadyExists(Exception):
    """The item a write would create is there already (an email registered, a provider account linked)."""


class ItemMissing(Exception):
    """The item a write needs is gone, or being deleted (a user, an account)."""


class CapReached(Exception):
    """A write would pass a count the table keeps (the accounts a user may link)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"at most {limit}")
        self.limit = limit


class MalformedCursor(Exception):
    """A listing's cursor is not one the table handed out for it (tampered, or of another listing)."""


class BillsLeftBehind(Exception):
    """DynamoDB kept throttling a deletion's batch deletes; the account is hidden, its bills wait for the
    next attempt (a repeated DELETE, or the planner's sweep)."""


class AccountGone(Exception):
    """The account was deleted (or is being deleted) meanwhile; nothing of it may be written."""
