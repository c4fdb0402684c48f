"""OAuth2 links in progress: each state under its nonce, and a pointer to it in its user's partition."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from billhub import keys
from billhub.store.base import Table, _condition_failed_at, _from_item, _is_conditional_failure, _to_item
from billhub.store.errors import ItemMissing


class LinksInProgress(Table):
    """OAuth2 links begun and not yet completed (``billhub.oauth.OAuthStates`` signs the nonce of each)."""

    def put_oauth_state(self, user_id: str, nonce: str, link: dict[str, Any], expires_at: datetime) -> None:
        """Stores a link in progress under its nonce, and a pointer to it in the user's partition (their
        deletion finds their states by it), in one transaction checking the user still exists and is not
        being deleted: their deletion lists pointers after marking the profile, so a state is either in
        that list or never stored. ``ItemMissing`` if the user is gone or being deleted."""
        expiry = int(expires_at.timestamp())
        pointer = {"PK": keys.user_pk(user_id), "SK": keys.oauth_state_pointer_sk(nonce), "type": "oauth_state_ref"}
        state = {"PK": keys.oauth_state_pk(nonce), "SK": keys.OAUTH_STATE_SK, "type": "oauth_state", "link": link}
        try:
            self._retried.transact_write_items(
                TransactItems=[
                    {
                        "Put": {
                            "TableName": self._table,
                            "Item": _to_item({**state, "expires_at": expiry}),
                            "ConditionExpression": "attribute_not_exists(PK)",
                        }
                    },
                    {"Put": {"TableName": self._table, "Item": _to_item({**pointer, "expires_at": expiry})}},
                    {
                        "ConditionCheck": {
                            "TableName": self._table,
                            "Key": _to_item({"PK": keys.user_pk(user_id), "SK": keys.PROFILE_SK}),
                            "ConditionExpression": "attribute_exists(PK) AND attribute_not_exists(deleting_since)",
                        }
                    },
                ]
            )
        except ClientError as error:
            if _condition_failed_at(error, 2):
                raise ItemMissing(f"user {user_id}") from error
            raise

    def consume_oauth_state(self, nonce: str, now: datetime) -> dict[str, Any] | None:
        """The link stored with the state, exactly once and only before it expires (TTL deletion lags).

        The state is marked used rather than deleted, with a mark of this call's own: when the SDK
        retries the write after a timeout that hid its success, the retry finds its own mark and gets
        the link, where a retried conditional delete would find nothing and refuse the user's link.
        The item goes with its TTL."""
        mark = secrets.token_hex(16)
        try:
            response = self._retried.update_item(
                TableName=self._table,
                Key=_to_item({"PK": keys.oauth_state_pk(nonce), "SK": keys.OAUTH_STATE_SK}),
                UpdateExpression="SET used_by = :mark",
                ConditionExpression="attribute_exists(PK) AND expires_at > :now "
                "AND (attribute_not_exists(used_by) OR used_by = :mark)",
                ExpressionAttributeValues=_to_item({":now": int(now.timestamp()), ":mark": mark}),
                ReturnValues="ALL_NEW",
            )
        except ClientError as error:
            if _is_conditional_failure(error):
                return None
            raise
        link: dict[str, Any] = _from_item(response["Attributes"])["link"]
        return link
