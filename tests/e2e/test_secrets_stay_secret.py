"""No secret of a run reaches a log or lies in the table as plaintext.

One local cloud: a user links an account at each of the four providers (SparkGrid through the OAuth2
redirect), refreshes, gets a link refused and a login refused. Then every log the service wrote (each
function's, the gateway's and poller's, the AWS stand-in's) is searched for every secret used or issued:
passwords (right and wrong), the API key, the access token, the OAuth code and the tokens it was exchanged
for, the OAuth clients' secrets, and the ciphertext of each stored credential. Only the sandbox
provider's own request log is left out: it is the provider's log, not the service's.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import pytest

from billhub.credentials import CredentialVault
from localcloud.demo import DEMO_CREDENTIALS, DEMO_PASSWORD
from localcloud.template import load_template
from tests.e2e.harness import Cloud, local_cloud, wait_until

EMAIL = "secrets@example.com"
PASSWORD = "Sx-login-password-7731"
WRONG_PASSWORD = "Sx-wrong-password-4402"
CREDENTIALS = {
    "northgas": {"account_number": "NG40007007", "postcode": "ng1 1aa"},
    "clearwater": {"api_key": "cw_sandbox_sx_key_5eeb1f"},
    "fibrelink": {"username": "sx_fibre_user", "password": "pass_good"},
}
REFUSED_FIBRELINK_PASSWORD = "sx-refused-pw-99"
# The sandbox's registered OAuth clients (mock_provider/README.md); the service holds their secrets.
CLIENT_SECRETS = ["sparkgrid-sandbox-secret", "northgas-sandbox-secret"]
PROVIDER_LOG = "mock_provider.log"
# The local cloud prints the documented demo login (localcloud/demo.py) on start, for the developer.
DOCUMENTED = {("demo password", "stdout.log")}


class Run:
    def __init__(self, cloud: Cloud, workdir: Path) -> None:
        self.cloud = cloud
        self.workdir = workdir
        self.headers: dict[str, str] = {}
        self.user_id = ""
        self.oauth_code = ""
        self.oauth_state = ""


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    workdir = tmp_path_factory.mktemp("secrets")
    with local_cloud(workdir) as cloud:
        done = Run(cloud, workdir)
        api = cloud.api
        assert api.post("/auth/register", json={"email": EMAIL, "password": PASSWORD}).status_code == 201
        done.headers = cloud.login(EMAIL, PASSWORD)
        done.user_id = api.get("/me", headers=done.headers).json()["user_id"]
        for provider, credentials in CREDENTIALS.items():
            linked = api.post(
                "/accounts/link", headers=done.headers, json={"provider": provider, "credentials": credentials}
            )
            assert linked.status_code == 201, linked.text
        # SparkGrid, as a browser would: start, the provider's consent (approved at once), the callback.
        start = api.get("/accounts/oauth/sparkgrid/start", headers=done.headers)
        assert start.status_code == 200, start.text
        consent = httpx.get(f"{start.json()['authorize_url']}&{urlencode({'login_hint': 'sx_spark'})}")
        assert consent.status_code == 302, consent.text
        callback = consent.headers["Location"]
        query = dict(parse_qsl(urlsplit(callback).query))
        done.oauth_code, done.oauth_state = query["code"], query["state"]
        assert api.get(callback).status_code == 201
        refused = api.post(
            "/accounts/link",
            headers=done.headers,
            json={
                "provider": "fibrelink",
                "credentials": {"username": "sx_fibre_other", "password": REFUSED_FIBRELINK_PASSWORD},
            },
        )
        assert refused.status_code == 422, refused.text
        started = api.post("/bills/refresh", headers=done.headers)
        assert started.status_code == 202, started.text
        job_url = f"/bills/refresh/{started.json()['job_id']}"
        job = wait_until(
            lambda: (body := api.get(job_url, headers=done.headers).json())["status"] != "running" and body,
            60,
            "the refresh job",
        )
        assert (job["status"], job["succeeded"]) == ("succeeded", 4), job
        failed = api.post("/auth/login", json={"email": EMAIL, "password": WRONG_PASSWORD})
        assert failed.status_code == 401, failed.text
        yield done


def table_items(cloud: Cloud) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for page in cloud.aws("dynamodb").get_paginator("scan").paginate(TableName="billhub-local-BillsTable"):
        items += page["Items"]
    return items


def credentials_key_id(cloud: Cloud) -> str:
    """The local cloud's CredentialsKey, known by the description template.yaml gives it."""
    kms = cloud.aws("kms")
    description = load_template()["Resources"]["CredentialsKey"]["Properties"]["Description"]
    keys = [kms.describe_key(KeyId=key["KeyId"])["KeyMetadata"] for key in kms.list_keys()["Keys"]]
    return next(str(key["KeyId"]) for key in keys if key["Description"] == description)


def stored_credentials(run: Run) -> list[tuple[bytes, dict[str, Any]]]:
    """Each of the user's accounts' credentials as stored (ciphertext) and as the service's vault decrypts them."""
    vault = CredentialVault(run.cloud.aws("kms"), credentials_key_id(run.cloud))
    found = []
    for item in table_items(run.cloud):
        if item["PK"]["S"] != f"USER#{run.user_id}" or "credentials" not in item:
            continue
        ciphertext = item["credentials"]["B"]
        account_id = item["SK"]["S"].removeprefix("ACCOUNT#")
        found.append((ciphertext, vault.decrypt(run.user_id, account_id, ciphertext)))
    return found


def secret_values(credentials: dict[str, Any]) -> list[str]:
    """The credential values worth hiding (tokens, keys, passwords, postcodes), not expiry times or ids."""
    return [
        value
        for name, value in credentials.items()
        if isinstance(value, str) and len(value) >= 6 and name not in ("username", "account_number", "expires_at")
    ]


def service_logs(run: Run) -> dict[str, str]:
    logs = {
        str(path.relative_to(run.workdir)): path.read_text(errors="replace")
        for path in run.workdir.rglob("*.log")
        if path.name != PROVIDER_LOG
    }
    assert logs["stdout.log"] is not None
    return logs


def test_the_run_left_structured_logs_to_search(run: Run) -> None:
    logs = service_logs(run)
    functions = {name: text for name, text in logs.items() if name.endswith("Function.log")}
    assert len(functions) >= 5, sorted(logs)
    assert "fetched bills" in "".join(functions.values())  # the logs are there and are being written
    # Every line a function wrote is Powertools' structured JSON (or its metrics), never free text; the
    # REPORT line after each invocation is the platform's, as in Lambda's own log streams.
    for name, text in functions.items():
        for line in text.splitlines():
            if line.startswith("REPORT RequestId: "):
                continue
            entry = json.loads(line)
            assert "_aws" in entry or {"level", "message", "service", "function_request_id"} <= set(entry), (name, line)


def test_no_secret_of_the_run_is_in_any_log(run: Run) -> None:
    stored = stored_credentials(run)
    assert len(stored) == 4, "one stored credential per linked account"
    secrets = {
        "password": PASSWORD,
        "wrong password": WRONG_PASSWORD,
        "demo password": DEMO_PASSWORD,
        "refused provider password": REFUSED_FIBRELINK_PASSWORD,
        "OAuth code": run.oauth_code,
        "OAuth state": run.oauth_state,
        **{f"client secret {index}": secret for index, secret in enumerate(CLIENT_SECRETS)},
        **{f"access token {index}": token for index, token in enumerate(run.cloud.issued_tokens)},
    }
    for provider, credentials in {**CREDENTIALS, **DEMO_CREDENTIALS}.items():
        for value in secret_values(credentials):
            if value != "pass_good":  # the sandbox's one good password is in its own docs, tested via the others
                secrets[f"{provider} credential"] = value
    for index, (ciphertext, credentials) in enumerate(stored):
        secrets[f"ciphertext {index}"] = base64.b64encode(ciphertext).decode()
        secrets[f"ciphertext {index} (hex)"] = ciphertext.hex()
        for name, value in credentials.items():
            if value in secret_values({name: value}):
                secrets[f"stored {name} {index}"] = value
    # The tokens SparkGrid issued for the code are among the stored credentials.
    assert {"access_token", "refresh_token"} <= {name for _, creds in stored for name in creds}
    leaks = {
        (what, log)
        for log, text in service_logs(run).items()
        for what, secret in secrets.items()
        if secret and secret in text and (what, log) not in DOCUMENTED
    }
    assert leaks == set()


def test_no_credential_is_stored_in_plaintext(run: Run) -> None:
    raw = json.dumps(table_items(run.cloud), default=str)
    plaintexts = [PASSWORD, WRONG_PASSWORD, REFUSED_FIBRELINK_PASSWORD, run.oauth_code]
    plaintexts += [value for credentials in CREDENTIALS.values() for value in secret_values(credentials)]
    plaintexts += [value for _, credentials in stored_credentials(run) for value in secret_values(credentials)]
    assert [value for value in plaintexts if value in raw] == []
