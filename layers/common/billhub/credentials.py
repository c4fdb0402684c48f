"""Provider credentials at rest: encrypted with KMS, bound to their user and account.

The encryption context names the user and the account, so a ciphertext copied onto another account
item will not decrypt. Credentials are a few hundred bytes, well under KMS's 4 KB direct limit.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mypy_boto3_kms import KMSClient


class CredentialVault:
    def __init__(self, kms: KMSClient, key_id: str) -> None:
        self._kms = kms
        self._key_id = key_id

    def encrypt(self, user_id: str, account_id: str, credentials: dict[str, Any]) -> bytes:
        response = self._kms.encrypt(
            KeyId=self._key_id,
            Plaintext=json.dumps(credentials, separators=(",", ":")).encode(),
            EncryptionContext=_context(user_id, account_id),
        )
        return response["CiphertextBlob"]

    def decrypt(self, user_id: str, account_id: str, ciphertext: bytes) -> dict[str, Any]:
        response = self._kms.decrypt(
            KeyId=self._key_id, CiphertextBlob=ciphertext, EncryptionContext=_context(user_id, account_id)
        )
        credentials: dict[str, Any] = json.loads(response["Plaintext"])
        return credentials


def _context(user_id: str, account_id: str) -> dict[str, str]:
    return {"user_id": user_id, "account_id": account_id, "purpose": "provider-credentials"}
