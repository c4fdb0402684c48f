"""All access to the single DynamoDB table: its items, conditions and transactions live in this package
only, one repository per aggregate over the helpers of ``base``:

- ``users``: profiles and email guards; ``sign_in``: failed sign-in counters;
- ``accounts``: linked accounts and their link guards; ``schedule``: when each is refreshed next;
- ``reminders``: when each user is reminded next, and the bills announced to them;
- ``bills``: bills and their revisions; ``jobs``: refresh jobs; ``oauth_states``: OAuth2 links in progress;
- ``deletions``: deleting an account, and a user;
- ``webhooks``: a user's webhooks; ``deliveries``: each event's delivery to each, the delivery log.

The formats of their keys (and every prefix) are in ``billhub/keys.py``, whose table lists every item;
what each holds, and which module holds it, is in docs/data-model.md. The domain depends on the
``Protocol``s of ``protocols``; ``BillsTable`` is where a handler gets the repositories, all over one
client and table.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from billhub.store.accounts import Accounts, StoredAccount
from billhub.store.base import BATCH_WRITE_LIMIT, CONFLICT_ATTEMPTS
from billhub.store.bill_queries import BillQuery
from billhub.store.bills import Bills, StoredBill
from billhub.store.deletions import AccountDeletions, UserDeletions
from billhub.store.deliveries import Deliveries
from billhub.store.errors import AccountGone, BillsLeftBehind, ConcurrentUpdate
from billhub.store.jobs import RefreshJobs
from billhub.store.oauth_states import LinksInProgress
from billhub.store.reminders import DueReminder, ReminderSchedule
from billhub.store.schedule import DueRefresh, RefreshSchedule, RefreshShard
from billhub.store.sign_in import SignInChecks
from billhub.store.users import Users
from billhub.store.webhooks import Webhooks

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

__all__ = [
    "BATCH_WRITE_LIMIT",
    "CONFLICT_ATTEMPTS",
    "AccountGone",
    "BillQuery",
    "BillsLeftBehind",
    "BillsTable",
    "ConcurrentUpdate",
    "DueRefresh",
    "DueReminder",
    "RefreshShard",
    "StoredAccount",
    "StoredBill",
]


class BillsTable:
    """The table's repositories, each over the same client and table name."""

    def __init__(self, client: DynamoDBClient, table_name: str) -> None:
        self.client = client  # the one client every repository calls, for what observes their requests
        self.table_name = table_name
        self.users = Users(client, table_name)
        self.sign_in = SignInChecks(client, table_name)
        self.accounts = Accounts(client, table_name)
        self.schedule = RefreshSchedule(client, table_name)
        self.reminders = ReminderSchedule(client, table_name)
        self.bills = Bills(client, table_name)
        self.jobs = RefreshJobs(client, table_name)
        self.oauth_states = LinksInProgress(client, table_name)
        self.account_deletions = AccountDeletions(client, table_name)
        self.user_deletions = UserDeletions(client, table_name)
        self.webhooks = Webhooks(client, table_name)
        self.deliveries = Deliveries(client, table_name)
