"""The table's key formats, pinned to the documented layout (docs/data-model.md), and owned by billhub/keys.py.

A format changed here changes where items are stored: items written before would no longer be found.
So the examples spell every key out literally, and a change to one is a failing test, not a refactor.
"""

from __future__ import annotations

import ast
import hashlib
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from billhub import keys
from billhub.models import Bill, BillStatus, Category, LoginSubject

ROOT = Path(__file__).resolve().parents[2]
USER = "4f1c2b9e8d7a6c5b4a3928170f6e5d4c"
ACCOUNT = "0123456789abcdef0123456789abcdef"
SINCE = datetime(2024, 3, 1, 6, 30, tzinfo=UTC)


def a_bill() -> Bill:
    return Bill(
        provider="sparkgrid",
        account_id=ACCOUNT,
        provider_bill_id="INV-2024-03",
        category=Category.ELECTRICITY,
        amount=Decimal("42.10"),
        currency="USD",
        issued_on=date(2024, 3, 1),
        due_on=date(2024, 3, 15),
        status=BillStatus.UNPAID,
    )


def test_the_keys_of_a_user_and_their_email() -> None:
    assert keys.user_pk(USER) == "USER#4f1c2b9e8d7a6c5b4a3928170f6e5d4c"
    assert keys.PROFILE_SK == "PROFILE"
    assert (keys.email_pk("ada@example.com"), keys.EMAIL_SK) == ("EMAIL#ada@example.com", "EMAIL")
    assert keys.user_id_of("USER#4f1c2b9e8d7a6c5b4a3928170f6e5d4c") == USER


def test_the_keys_of_an_account_its_link_guard_and_its_deletion_marker() -> None:
    assert keys.account_sk(ACCOUNT) == "ACCOUNT#0123456789abcdef0123456789abcdef"
    assert keys.account_id_of("ACCOUNT#0123456789abcdef0123456789abcdef") == ACCOUNT
    # A digest of the provider's account number (sha256, 32 hex digits), never the number itself.
    assert keys.link_sk("clearwater", "CW-00000009") == "LINK#clearwater#cef6c97d3a2c5475072d93d244634a30"
    assert keys.deleted_sk(ACCOUNT) == "DELETED#0123456789abcdef0123456789abcdef"


def test_the_keys_of_a_bill_in_the_table_and_in_lsi1() -> None:
    bill = a_bill()
    assert keys.bill_sk(bill) == "BILL#sparkgrid#0123456789abcdef0123456789abcdef#INV-2024-03"
    assert keys.account_bills_prefix("sparkgrid", ACCOUNT) == "BILL#sparkgrid#0123456789abcdef0123456789abcdef#"
    assert keys.bill_issue_sk(bill) == "2024-03-01#sparkgrid#0123456789abcdef0123456789abcdef#INV-2024-03"
    assert keys.is_bill_sk(keys.bill_sk(bill)) and not keys.is_bill_sk(keys.account_sk(ACCOUNT))
    assert keys.is_bill_issue_sk(keys.bill_issue_sk(bill)) and not keys.is_bill_issue_sk("2024-03-01#sparkgrid")
    assert keys.issued_between(date(2024, 1, 1), date(2024, 3, 31)) == ("2024-01-01", "2024-03-31~")
    assert keys.issued_between(None, None) == ("0", "~")
    assert keys.issued_since(date(2021, 11, 1)) == "2021-11-01"


# Every shard count ever deployed, in order: append a grown count here, never lower one. Accounts keep
# the shard they were filed under until they are next claimed, so a smaller count would strand them.
DEPLOYED_REFRESH_SHARD_COUNTS = (8,)


def test_the_refresh_shard_count_only_grows() -> None:
    assert DEPLOYED_REFRESH_SHARD_COUNTS[-1] == keys.REFRESH_SHARDS
    assert list(DEPLOYED_REFRESH_SHARD_COUNTS) == sorted(DEPLOYED_REFRESH_SHARD_COUNTS)
    assert keys.REFRESH_SHARDS <= keys.MAX_REFRESH_SHARDS
    # Planners plan every shard below the count: each index of every count before it.
    assert all(set(range(count)) <= set(keys.refresh_shards()) for count in DEPLOYED_REFRESH_SHARD_COUNTS)


def test_the_refresh_schedule_in_gsi1() -> None:
    # Filed with its provider; the same shard by the same digest, whichever the provider.
    assert keys.refresh_shard(ACCOUNT, "northgas") == "REFRESH#northgas#6"
    assert keys.refresh_pk(3, "sparkgrid") == "REFRESH#sparkgrid#3"
    # Keys written before the provider was in them, still planned.
    assert keys.refresh_shard(ACCOUNT) == "REFRESH#6"
    assert keys.refresh_pk(3) == "REFRESH#3"
    with pytest.raises(ValueError, match="#"):
        keys.refresh_pk(3, "spark#grid")
    refresh_key = keys.refresh_sk(ACCOUNT, SINCE, "weekly")
    assert refresh_key == "2024-03-01T06:30:00+00:00#0123456789abcdef0123456789abcdef#weekly"
    assert (keys.interval_of(refresh_key), keys.next_refresh_of(refresh_key)) == ("weekly", SINCE)
    # Accounts linked before intervals were kept: every one was daily then.
    old_key = keys.daily_refresh_sk_before_intervals(ACCOUNT, SINCE)
    assert old_key == "2024-03-01T06:30:00+00:00#0123456789abcdef0123456789abcdef"
    assert (keys.interval_of(old_key), keys.next_refresh_of(old_key)) == ("daily", SINCE)
    assert keys.due_by(SINCE) == "2024-03-01T06:30:00+00:00#~"


def test_the_deletion_sweeps_in_gsi1() -> None:
    assert (keys.DELETING_ACCOUNTS, keys.DELETING_USERS) == ("DELETING", "DELETING_USERS")
    assert keys.deleting_account_sk(SINCE, USER, ACCOUNT) == (
        "2024-03-01T06:30:00+00:00#4f1c2b9e8d7a6c5b4a3928170f6e5d4c#0123456789abcdef0123456789abcdef"
    )
    assert keys.deleting_user_sk(SINCE, USER) == "2024-03-01T06:30:00+00:00#4f1c2b9e8d7a6c5b4a3928170f6e5d4c"
    assert keys.deleting_before(SINCE) == "2024-03-01T06:30:00+00:00"


def test_the_keys_of_jobs_and_oauth2_states() -> None:
    assert keys.job_sk("a" * 32) == f"JOB#{'a' * 32}"
    assert (keys.oauth_state_pk("n0nce"), keys.OAUTH_STATE_SK) == ("OAUTHSTATE#n0nce", "STATE")
    pointer = keys.oauth_state_pointer_sk("n0nce")
    assert pointer == "OAUTHSTATE#n0nce"
    assert keys.oauth_state_pk_named_by(pointer) == "OAUTHSTATE#n0nce"
    assert keys.oauth_state_pk_named_by(keys.job_sk("a" * 32)) is None


def test_the_sign_in_counters() -> None:
    # Digests (sha256, 32 hex digits) of the email and of the IP: no address in a key listing.
    assert keys.login_attempts_pk(LoginSubject.email("ada@example.com")) == (
        "LOGINATTEMPTS#account#b5fc85e55755f9e0d030a10ab4429b6b"
    )
    assert keys.login_attempts_pk(LoginSubject.source("203.0.113.7")) == (
        "LOGINATTEMPTS#source#fec52565aa0cf18f57d7cf5b3ac72850"
    )
    assert keys.LOGIN_ATTEMPTS_SK == "WINDOW"


def test_the_idempotency_records() -> None:
    assert keys.idempotency_pk(USER) == "IDEMPOTENCY#4f1c2b9e8d7a6c5b4a3928170f6e5d4c"
    prefix = keys.idempotency_key_prefix(USER, "POST /accounts")
    assert prefix == "4f1c2b9e8d7a6c5b4a3928170f6e5d4c#POST /accounts"
    # Powertools names the record ``<prefix>#<digest>``; it is filed in the caller's partition.
    assert keys.idempotency_record_key(f"{prefix}#d1e5") == (
        "IDEMPOTENCY#4f1c2b9e8d7a6c5b4a3928170f6e5d4c",
        "POST /accounts#d1e5",
    )
    with pytest.raises(ValueError, match="never contain"):
        keys.idempotency_key_prefix("not#a-user", "POST /accounts")


def test_the_keys_of_rate_budgets_circuits_and_alerts() -> None:
    assert (keys.rate_pk("sparkgrid"), keys.rate_sk(1709274600)) == ("RATE#sparkgrid", "SECOND#1709274600")
    assert (keys.admission_pk("northgas"), keys.admission_sk(1709272800)) == ("ADMIT#northgas", "HOUR#1709272800")
    assert keys.CIRCUIT_PK == "CIRCUIT"
    assert (keys.alert_pk("circuit-open#sparkgrid"), keys.ALERT_SK) == ("ALERT#circuit-open#sparkgrid", "ALERT")
    assert (keys.burst_pk("credentials#northgas"), keys.burst_sk(5697582)) == (
        "BURST#credentials#northgas",
        "WINDOW#5697582",
    )


def test_every_prefix_of_the_keys_module_is_listed() -> None:
    """``PREFIXES`` and ``FIXED_KEYS``, which the scan below looks for, are every one keys.py defines."""
    defined = {
        value
        for name, value in vars(keys).items()
        if name.isupper() and isinstance(value, str) and value != keys.SEPARATOR
    }
    assert set(keys.PREFIXES) == {value for value in defined if value.endswith(keys.SEPARATOR)}
    assert set(keys.FIXED_KEYS) == {value for value in defined if not value.endswith(keys.SEPARATOR)}


def _strings(source: str) -> list[tuple[int, str]]:
    """Every string literal of a module, and every literal part of its f-strings, with its line."""
    return [
        (node.lineno, node.value)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    ]


def test_no_module_but_keys_spells_a_key() -> None:
    """No key prefix or fixed key is spelled in layers/ or functions/ outside billhub/keys.py."""
    owner = ROOT / "layers" / "common" / "billhub" / "keys.py"
    sources = sorted([*(ROOT / "layers").rglob("*.py"), *(ROOT / "functions").rglob("*.py")])
    assert owner in sources and len(sources) > 20
    leaks = [
        f"{path.relative_to(ROOT)}:{line}: {value!r}"
        for path in sources
        if path != owner
        for line, value in _strings(path.read_text())
        if value.startswith(keys.PREFIXES) or value in keys.FIXED_KEYS
    ]
    assert leaks == []


def test_the_scan_finds_a_key_spelled_elsewhere() -> None:
    leaked = 'key = {"PK": f"USER#{user_id}", "SK": "PROFILE"}\nsweep = "DELETING"\n'
    found = [value for _, value in _strings(leaked) if value.startswith(keys.PREFIXES) or value in keys.FIXED_KEYS]
    assert sorted(found) == ["DELETING", "PROFILE", "USER#"]


def test_the_keys_of_the_reminder_schedule() -> None:
    # A profile's GSI1 while it is on the daily reminders' schedule: one of 8 shards by its id's digest.
    assert keys.REMINDER_SHARDS == 8
    assert keys.remind_pk(3) == "REMIND#3"
    assert keys.reminder_shard(USER) == f"REMIND#{hashlib.sha256(USER.encode()).digest()[0] % 8}"
    assert list(keys.reminder_shards()) == list(range(8))
    assert keys.reminder_sk(USER, SINCE) == "2024-03-01T06:30:00+00:00#4f1c2b9e8d7a6c5b4a3928170f6e5d4c"
    assert keys.reminder_due_by(SINCE) == "2024-03-01T06:30:00+00:00#~"
