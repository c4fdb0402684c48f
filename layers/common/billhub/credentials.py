"""Provider credentials at rest: envelope encryption under the stack's KMS key, bound to their user and account.

KMS ``Encrypt`` takes at most 4,096 bytes, less than the credentials the models accept (two OAuth2 tokens
of 4,096 characters each), and a KMS request per fetch is the service's largest KMS cost. So credentials
are encrypted with AES-256-GCM (``cryptography``) under a data key from KMS ``GenerateDataKey``, and the
data key, wrapped by KMS, is stored beside them (docs/decisions.md):

    MAGIC (4) | VERSION (1) | wrapped key length (2, big-endian) | wrapped key | nonce (12) | ciphertext + tag (16)

- The associated data is that header (through the wrapped key) and the canonical encoding of the context
  {user_id, account_id, purpose}: a ciphertext copied onto another account item, or any byte changed,
  refuses to decrypt. The purpose is the vault's (``PURPOSE`` for provider credentials,
  ``"webhook-secret"`` for webhooks' signing secrets, with the webhook's id as the account id), so a
  credential never decrypts as a webhook secret, nor the other way round.
- The wrapped key's KMS encryption context names only the purpose: one data key serves many credentials.
- An encrypting vault reuses its data key for ``DATA_KEY_MAX_AGE_SECONDS`` and ``DATA_KEY_MAX_MESSAGES``;
  a decrypting one keeps the last ``UNWRAPPED_KEYS_KEPT`` unwrapped keys as long, so the credentials one
  environment wrote cost one KMS ``Decrypt`` wherever they are read.
- A ciphertext without the magic is a legacy one (KMS ``Encrypt`` of the JSON, context {user_id,
  account_id, purpose}) and is decrypted by KMS; every write makes the new format, so a legacy
  credential is rewrapped the next time it is written (a repair, a token renewal).
"""

from __future__ import annotations

import json
import os
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

if TYPE_CHECKING:
    from mypy_boto3_kms import KMSClient

PURPOSE = "provider-credentials"
# The first bytes of every envelope. A KMS ciphertext blob for a symmetric key begins with its format
# version, 0x01, in AWS; moto's begins with the key's id in ASCII. Neither can begin with 0x00, so a
# stored value is told apart by its first byte already; the rest of the magic makes a mistake loud.
MAGIC = b"\x00bhc"
VERSION = 1
_HEADER = struct.Struct(">4sBH")  # magic, version, wrapped key length
NONCE_BYTES = 12  # GCM's 96-bit nonce, random per message
# How long one data key encrypts, and for how many messages. Random 96-bit nonces stay safe to 2**32
# messages per key (NIST SP 800-38D), far beyond either bound; the bounds limit what one leaked data key
# would open and how long plaintext key material stays in memory, and still make the KMS request rare
# (one per environment per five minutes, where every fetch used to make one).
DATA_KEY_MAX_AGE_SECONDS = 300.0
DATA_KEY_MAX_MESSAGES = 10_000
# Unwrapped data keys a decrypting vault keeps (least recently used goes first), each at most
# DATA_KEY_MAX_AGE_SECONDS: the keys of the environments that wrote lately, enough for a fetcher's batches.
UNWRAPPED_KEYS_KEPT = 32


@dataclass
class _DataKey:
    cipher: AESGCM
    wrapped: bytes
    unwrapped_at: float
    messages: int = 0


class CredentialVault:
    def __init__(
        self, kms: KMSClient, key_id: str, clock: Callable[[], float] = time.monotonic, purpose: str = PURPOSE
    ) -> None:
        """``purpose`` names what the vault keeps (provider credentials, webhook signing secrets): it is in
        every ciphertext's associated data and its data keys' KMS context, so what one purpose's vault
        sealed never opens in another's."""
        self._kms = kms
        self._key_id = key_id
        self._purpose = purpose
        self._key_context = {"purpose": purpose}
        self._clock = clock
        # One KMS request at a time: concurrent fetches of a batch wait for the data key the first one
        # asks for rather than each asking for its own.
        self._lock = threading.Lock()
        self._encrypting: _DataKey | None = None
        self._unwrapped: OrderedDict[bytes, _DataKey] = OrderedDict()

    def encrypt(self, user_id: str, account_id: str, credentials: dict[str, Any]) -> bytes:
        plaintext = json.dumps(credentials, separators=(",", ":")).encode()
        key = self._encrypting_key()
        header = _HEADER.pack(MAGIC, VERSION, len(key.wrapped)) + key.wrapped
        nonce = os.urandom(NONCE_BYTES)
        sealed = key.cipher.encrypt(nonce, plaintext, header + self._associated_data(user_id, account_id))
        return header + nonce + sealed

    def decrypt(self, user_id: str, account_id: str, ciphertext: bytes) -> dict[str, Any]:
        if not ciphertext.startswith(MAGIC):
            return self._decrypt_legacy(user_id, account_id, ciphertext)
        _, version, wrapped_length = _HEADER.unpack_from(ciphertext)
        if version != VERSION:
            raise ValueError(f"credentials in an unknown format (version {version})")
        nonce_at = _HEADER.size + wrapped_length
        header, nonce = ciphertext[:nonce_at], ciphertext[nonce_at : nonce_at + NONCE_BYTES]
        key = self._unwrapped_key(header[_HEADER.size :])
        sealed = ciphertext[nonce_at + NONCE_BYTES :]
        plaintext = key.cipher.decrypt(nonce, sealed, header + self._associated_data(user_id, account_id))
        credentials: dict[str, Any] = json.loads(plaintext)
        return credentials

    def forget(self) -> None:
        """Drops every data key held (after a SnapStart restore: their ages were reckoned elsewhere)."""
        with self._lock:
            self._encrypting = None
            self._unwrapped.clear()

    def _encrypting_key(self) -> _DataKey:
        with self._lock:
            key = self._encrypting
            if key is None or not self._fresh(key) or key.messages >= DATA_KEY_MAX_MESSAGES:
                response = self._kms.generate_data_key(
                    KeyId=self._key_id, KeySpec="AES_256", EncryptionContext=self._key_context
                )
                key = _DataKey(AESGCM(response["Plaintext"]), response["CiphertextBlob"], self._clock())
                self._encrypting = key
                self._keep(key)
            key.messages += 1
            return key

    def _unwrapped_key(self, wrapped: bytes) -> _DataKey:
        with self._lock:
            key = self._unwrapped.get(wrapped)
            if key is not None and self._fresh(key):
                self._unwrapped.move_to_end(wrapped)
                return key
            response = self._kms.decrypt(
                KeyId=self._key_id, CiphertextBlob=wrapped, EncryptionContext=self._key_context
            )
            key = _DataKey(AESGCM(response["Plaintext"]), wrapped, self._clock())
            self._keep(key)
            return key

    def _keep(self, key: _DataKey) -> None:
        # Caller holds the lock.
        self._unwrapped[key.wrapped] = key
        self._unwrapped.move_to_end(key.wrapped)
        while len(self._unwrapped) > UNWRAPPED_KEYS_KEPT:
            self._unwrapped.popitem(last=False)

    def _fresh(self, key: _DataKey) -> bool:
        return self._clock() - key.unwrapped_at < DATA_KEY_MAX_AGE_SECONDS

    def _decrypt_legacy(self, user_id: str, account_id: str, ciphertext: bytes) -> dict[str, Any]:
        response = self._kms.decrypt(
            KeyId=self._key_id, CiphertextBlob=ciphertext, EncryptionContext=self._context(user_id, account_id)
        )
        credentials: dict[str, Any] = json.loads(response["Plaintext"])
        return credentials

    def _context(self, user_id: str, account_id: str) -> dict[str, str]:
        # ``account_id`` names what the secret belongs to: an account, or a webhook for a webhook's secret.
        return {"user_id": user_id, "account_id": account_id, "purpose": self._purpose}

    def _associated_data(self, user_id: str, account_id: str) -> bytes:
        """The context, canonically: JSON with sorted keys and every string quoted, so no two contexts meet."""
        return json.dumps(self._context(user_id, account_id), sort_keys=True, separators=(",", ":")).encode()
