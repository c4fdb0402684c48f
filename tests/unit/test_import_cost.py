"""What a cold start builds: functions that import the provider registry only for names and categories
(GET /bills, GET /providers) build no adapter's payload or credentials validators, and the insights
function builds the insights' response models only before its snapshot or at the first GET /insights; the
auth function imports email-validator at the first address it checks; and only the functions that touch
credentials import ``cryptography`` through the credential vault (the others' layers do not ship it, and
their HS256 tokens do without it)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from localcloud.template import ROOT


def fresh_interpreter(script: str, *arguments: str, env: dict[str, str] | None = None) -> Any:
    """What ``script`` prints as JSON, run by this interpreter in the layer's directory: a fresh one, as
    other tests in this process may have imported or built what is looked for already."""
    done = subprocess.run(  # noqa: S603 - this interpreter, a fixed script
        [sys.executable, "-c", script, *arguments],
        cwd=ROOT / "layers" / "common",
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout)


CENSUS = """
import inspect, json, sys
import pydantic
import billhub.providers
import billhub.insights
built = sorted(
    f"{module.__name__}.{name}"
    for module in list(sys.modules.values())
    if module is not None and module.__name__.startswith(("billhub.providers", "billhub.insights"))
    for name, value in vars(module).items()
    if inspect.isclass(value) and issubclass(value, pydantic.BaseModel) and value.__module__ == module.__name__
    and value.__pydantic_complete__
)
print(json.dumps(built))
"""


def test_importing_the_providers_and_insights_builds_only_what_listing_providers_answers_with() -> None:
    printed = fresh_interpreter(CENSUS)
    # Only what listing the providers answers with is built at import.
    assert printed == ["billhub.providers.base.CredentialField"]


# Given the auth function's domain module imported, then an address checked
EMAIL_CHECK = """
import json, sys
import billhub.users
imported_at_start = "email_validator" in sys.modules
billhub.users.canonical_email("Ada@Example.com")
print(json.dumps([imported_at_start, "email_validator" in sys.modules]))
"""


def test_email_validator_is_imported_by_the_first_address_checked_not_at_cold_start() -> None:
    printed = fresh_interpreter(EMAIL_CHECK)
    assert printed == [False, True]


# Given the bills function's handler imported as Lambda would
BILLS_HANDLER = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("app", sys.argv[1])
spec.loader.exec_module(importlib.util.module_from_spec(spec))
unwanted = ("billhub.insights", "statistics", "billhub.providers")
print(json.dumps(sorted(name for name in sys.modules if name.startswith(unwanted))))
"""


def test_the_bills_function_imports_neither_the_insights_nor_any_provider_adapter() -> None:
    printed = fresh_interpreter(
        BILLS_HANDLER,
        str(ROOT / "functions" / "get_bills" / "app.py"),
        env={"PATH": "", "TABLE_NAME": "bills", "AWS_DEFAULT_REGION": "us-east-1", "POWERTOOLS_LOG_LEVEL": "WARNING"},
    )
    # Then the insights have a function of their own, and the providers' names, display names and
    # categories came from the catalog alone
    assert printed == []


# Given a handler imported as Lambda would: which of the credential vault and its cipher it imported
CRYPTO_IMPORTED = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("app", sys.argv[1])
spec.loader.exec_module(importlib.util.module_from_spec(spec))
print(json.dumps(sorted(name for name in ("billhub.credentials", "cryptography") if name in sys.modules)))
"""
FUNCTION_ENVIRONMENT = {
    "PATH": "",
    "TABLE_NAME": "bills",
    "CREDENTIALS_KEY_ID": "key",
    "JWT_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:jwt",
    "JWT_ISSUER": "billhub",
    "JWT_AUDIENCE": "billhub-api",
    "AWS_DEFAULT_REGION": "us-east-1",
    "POWERTOOLS_LOG_LEVEL": "WARNING",
    "EVENT_BUS_NAME": "bus",
    "REMINDER_SENDER": "reminders@billhub.example",
}


@pytest.mark.parametrize("function", ["get_bills", "insights", "reminders"])
def test_functions_that_never_touch_credentials_do_not_import_cryptography(function: str) -> None:
    printed = fresh_interpreter(
        CRYPTO_IMPORTED, str(ROOT / "functions" / function / "app.py"), env=FUNCTION_ENVIRONMENT
    )
    assert printed == []


# Given cryptography not importable, as where the authorizer and auth functions run (their layer,
# CommonLayer, does not ship it; this venv has it for the vault's users): the handler imported, a token
# issued and verified, and whether pyjwt loaded its asymmetric algorithms
TOKENS_WITHOUT_CRYPTOGRAPHY = """
import importlib.util, json, sys
from datetime import UTC, datetime
sys.modules["cryptography"] = None  # any import of it, or of a module in it, raises ModuleNotFoundError
spec = importlib.util.spec_from_file_location("app", sys.argv[1])
spec.loader.exec_module(importlib.util.module_from_spec(spec))
from billhub.auth import KeyRing, TokenService
service = TokenService(KeyRing.fixed("k" * 64), "billhub", "billhub-api", 900)
service.prepare()
now = datetime.now(UTC)
claims = service.verify(service.issue("user-1", now).access_token, now)
import jwt.algorithms
print(json.dumps([claims["sub"], jwt.algorithms.has_crypto]))
"""


@pytest.mark.parametrize("function", ["authorizer", "auth"])
def test_the_token_functions_import_issue_and_verify_without_cryptography(function: str) -> None:
    printed = fresh_interpreter(
        TOKENS_WITHOUT_CRYPTOGRAPHY, str(ROOT / "functions" / function / "app.py"), env=FUNCTION_ENVIRONMENT
    )
    # Then HS256 needs none of what pyjwt imports cryptography for (and the layer test checks it is not shipped)
    assert printed == ["user-1", False]
