"""The credential vault against KMS as the local cloud serves it (moto's server, over HTTP): envelope
encryption of the longest credentials, bound to their user and account, with the data keys cached, and
credentials stored before it still read."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import boto3
import httpx
import pytest
from botocore.exceptions import ClientError
from cryptography.exceptions import InvalidTag

from billhub import credentials as vault_module
from billhub.credentials import DATA_KEY_MAX_AGE_SECONDS, DATA_KEY_MAX_MESSAGES, MAGIC, CredentialVault
from localcloud.launch import free_port
from localcloud.moto_server import REQUEST_COUNTS_PATH
from tests.e2e.harness import start_server

# The most OAuthTokens accepts (billhub.providers.auth.Token): two tokens of 4,096 characters, 8 KB.
LONGEST = {"access_token": "a" * 4096, "refresh_token": "r" * 4096, "access_token_expires_at": None}
LEGACY_CONTEXT = {"user_id": "u1", "account_id": "a1", "purpose": "provider-credentials"}


class Moto:
    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.kms: Any = boto3.client(
            "kms",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        self.key_id = self.kms.create_key(Description="credentials")["KeyMetadata"]["KeyId"]

    def kms_requests(self) -> Counter[str]:
        counts = httpx.get(f"{self.endpoint}{REQUEST_COUNTS_PATH}", timeout=10).json()
        return Counter({name.removeprefix("TrentService."): n for name, n in counts.items() if "TrentService" in name})


@pytest.fixture(scope="module")
def moto() -> Iterator[Moto]:
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            return httpx.get(f"{endpoint}{REQUEST_COUNTS_PATH}", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    process = start_server(["localcloud.moto_server", "127.0.0.1", str(port)], answers, "the moto server")
    try:
        yield Moto(endpoint)
    finally:
        process.kill()
        process.wait(10)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def vault(moto: Moto, clock: Clock | None = None) -> CredentialVault:
    return CredentialVault(moto.kms, moto.key_id, clock or Clock())


def test_the_longest_credentials_the_models_accept_round_trip(moto: Moto) -> None:
    ciphertext = vault(moto).encrypt("u1", "a1", LONGEST)
    assert ciphertext.startswith(MAGIC)
    # Read back by another environment's vault (no key cached), as the fetcher reads what a link wrote
    assert vault(moto).decrypt("u1", "a1", ciphertext) == LONGEST
    # and small enough to sit in the account item (DynamoDB's items are at most 400 KB)
    assert len(ciphertext) < len(json.dumps(LONGEST)) + 512


@pytest.mark.parametrize(("user_id", "account_id"), [("u1", "a2"), ("u2", "a1"), ("u1a", "1")])
def test_a_ciphertext_moved_to_another_account_or_user_refuses_to_decrypt(
    moto: Moto, user_id: str, account_id: str
) -> None:
    ciphertext = vault(moto).encrypt("u1", "a1", {"api_key": "k"})
    with pytest.raises(InvalidTag):
        vault(moto).decrypt(user_id, account_id, ciphertext)


def test_a_changed_byte_anywhere_refuses_to_decrypt(moto: Moto) -> None:
    writer = vault(moto)
    ciphertext = writer.encrypt("u1", "a1", {"api_key": "k"})
    wrapped_length = int.from_bytes(ciphertext[5:7])
    # A byte of the wrapped key (KMS refuses it), of the nonce, of the ciphertext, of the tag
    for position in (7 + wrapped_length // 2, 7 + wrapped_length, len(ciphertext) - 20, len(ciphertext) - 1):
        tampered = bytearray(ciphertext)
        tampered[position] ^= 0x01
        with pytest.raises((InvalidTag, ClientError)):
            vault(moto).decrypt("u1", "a1", bytes(tampered))
        with pytest.raises((InvalidTag, ClientError)):
            writer.decrypt("u1", "a1", bytes(tampered))


def test_a_credential_stored_before_envelope_encryption_still_decrypts_and_is_rewrapped_on_its_next_write(
    moto: Moto,
) -> None:
    # Given credentials encrypted as the vault used to: KMS Encrypt of the JSON, the full context
    legacy = moto.kms.encrypt(
        KeyId=moto.key_id, Plaintext=json.dumps({"api_key": "old"}).encode(), EncryptionContext=LEGACY_CONTEXT
    )["CiphertextBlob"]
    assert not legacy.startswith(MAGIC)
    credentials_vault = vault(moto)
    # Then they decrypt, still bound to their user and account
    credentials = credentials_vault.decrypt("u1", "a1", legacy)
    assert credentials == {"api_key": "old"}
    with pytest.raises(ClientError, match="InvalidCiphertext"):
        credentials_vault.decrypt("u1", "a2", legacy)
    # and the next write of them is in the new format
    rewritten = credentials_vault.encrypt("u1", "a1", credentials)
    assert rewritten.startswith(MAGIC)
    assert vault(moto).decrypt("u1", "a1", rewritten) == credentials


def test_many_encryptions_within_the_window_cost_one_data_key_and_their_decryptions_one_unwrap(moto: Moto) -> None:
    before = moto.kms_requests()
    writer = vault(moto)
    stored = [(f"u{n}", f"a{n}", writer.encrypt(f"u{n}", f"a{n}", {"api_key": f"k{n}"})) for n in range(20)]
    after_writes = moto.kms_requests()
    assert after_writes - before == Counter({"GenerateDataKey": 1})
    # A fetcher's vault reads every one of them with one Decrypt
    reader = vault(moto)
    assert [reader.decrypt(user, account, ciphertext) for user, account, ciphertext in stored] == [
        {"api_key": f"k{n}"} for n in range(20)
    ]
    assert moto.kms_requests() - after_writes == Counter({"Decrypt": 1})
    # and the writer reads its own without asking KMS at all
    writer.decrypt(*stored[0])
    assert moto.kms_requests() - after_writes == Counter({"Decrypt": 1})


def test_a_data_key_past_its_age_is_replaced_and_unwrapped_again(moto: Moto) -> None:
    clock = Clock()
    writer, reader = vault(moto, clock), vault(moto, clock)
    first = writer.encrypt("u1", "a1", {"api_key": "k"})
    reader.decrypt("u1", "a1", first)
    before = moto.kms_requests()
    clock.now += DATA_KEY_MAX_AGE_SECONDS - 1
    second = writer.encrypt("u1", "a1", {"api_key": "k"})
    reader.decrypt("u1", "a1", first)
    assert moto.kms_requests() == before, "still within the age: the same data key, still unwrapped"
    clock.now += 1
    third = writer.encrypt("u1", "a1", {"api_key": "k"})
    assert _wrapped_key(third) != _wrapped_key(second) == _wrapped_key(first)
    reader.decrypt("u1", "a1", first)
    assert moto.kms_requests() - before == Counter({"GenerateDataKey": 1, "Decrypt": 1})


def test_a_data_key_encrypts_a_bounded_number_of_messages(moto: Moto, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vault_module, "DATA_KEY_MAX_MESSAGES", 3)
    assert DATA_KEY_MAX_MESSAGES > 3
    writer = vault(moto)
    keys = [_wrapped_key(writer.encrypt("u1", "a1", {"api_key": "k"})) for _ in range(4)]
    assert keys[0] == keys[1] == keys[2] != keys[3]


def test_an_envelope_of_an_unknown_version_is_refused(moto: Moto) -> None:
    ciphertext = bytearray(vault(moto).encrypt("u1", "a1", {"api_key": "k"}))
    ciphertext[4] = 2
    with pytest.raises(ValueError, match="version 2"):
        vault(moto).decrypt("u1", "a1", bytes(ciphertext))


def _wrapped_key(ciphertext: bytes) -> bytes:
    length = int.from_bytes(ciphertext[5:7])
    return ciphertext[7 : 7 + length]
