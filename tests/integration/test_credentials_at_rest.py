"""Credentials as long as the models accept are stored, through the fetcher's token renewal."""

from __future__ import annotations

import boto3

from billhub.credentials import CredentialVault
from billhub.store import BillsTable
from localcloud.provision import Stack
from mock_provider.control import Control
from tests.conftest import Clock
from tests.integration.harness import Api


def test_a_renewal_to_the_longest_tokens_keeps_the_rotated_refresh_token(
    api: Api, stack: Stack, clock: Clock, mock_provider: tuple[str, Control]
) -> None:
    # Given a SparkGrid account whose provider now issues tokens of 4,096 characters (8 KB together)
    user_id = api.user()
    status, linked = api.oauth_link(user_id, "sparkgrid", "ada")
    assert status == 201, linked
    mock_provider[1].set_faults("sparkgrid", token_chars=4096)
    # When two refreshes each find the access token expired, renew it and rotate the refresh token
    for _ in range(2):
        clock.advance(hours=2)
        result = api.refresh_all(user_id)
        assert result == {"batchItemFailures": []}
        [account] = api.accounts(user_id)
        assert (account["status"], account["last_error"]) == ("active", None)
    # Then the account stayed active: each renewal saved the refresh token it was issued, the one the
    # provider accepted the next time, and that 8 KB pair is what the table holds
    stored = BillsTable(boto3.client("dynamodb"), stack.refs["BillsTable"]).accounts.get_account(
        user_id, linked["account_id"]
    )
    assert stored is not None
    vault = CredentialVault(boto3.client("kms"), stack.refs["CredentialsKey"])
    tokens = vault.decrypt(user_id, linked["account_id"], stored.credentials_ciphertext)
    assert (len(tokens["access_token"]), len(tokens["refresh_token"])) == (4096, 4096)
    assert stored.credentials_version == 3  # the link's, then the two renewals'
    assert api.bills_of(user_id, "sparkgrid")["bills"]
