"""The whole system as `make run` starts it, driven over HTTP: local gateway -> real handlers ->
moto's server -> SQS poller -> fetcher -> mock provider. Nothing in-process, nothing mocked."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from billhub.keys import refresh_sk
from billhub.reminders import reminder_subject
from billhub.store import BillsTable
from localcloud.demo import DEMO_CREDENTIALS, DEMO_EMAIL, DEMO_OAUTH_LOGINS, DEMO_PASSWORD, link_with_oauth
from localcloud.template import load_template, queues_bound_to
from mock_provider.sandbox import ANOMALY_MONTHS_BACK
from tests.e2e.harness import Cloud, local_cloud, wait_until
from tests.sandbox import SandboxAccount, expected_bill_views, sandbox_admin

SCHEDULE_SECONDS = 3


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    workdir = tmp_path_factory.mktemp("localcloud")
    with local_cloud(
        workdir,
        LOCALCLOUD_SCHEDULE_SECONDS=str(SCHEDULE_SECONDS),
        # These tests refresh one user several times within seconds.
        LOCALCLOUD_PARAMETER_OVERRIDES=json.dumps({"ManualRefreshMinIntervalSeconds": "0"}),
    ) as started:
        yield started
    for function in ("GetBillsFunction", "InsightsFunction"):
        assert "Traceback" not in (workdir / "logs" / f"{function}.log").read_text(), function


E2E_LINKS = {
    "northgas": ({"account_number": "NG40005000", "postcode": "NG1 1AA"}, SandboxAccount("northgas", "NG40005000")),
    "clearwater": ({"api_key": "cw_sandbox_e2e_slice"}, SandboxAccount.clearwater("cw_sandbox_e2e_slice")),
    "fibrelink": ({"username": "e2e", "password": "pass_good"}, SandboxAccount.fibrelink("e2e")),
}


def expected_due(accounts: list[SandboxAccount], today: date) -> dict[str, str]:
    due: dict[str, Decimal] = {}
    for account in accounts:
        for bill in account.bills(today):
            if bill.status != "paid":
                due[account.currency] = due.get(account.currency, Decimal(0)) + bill.amount
    return {currency: f"{amount:.2f}" for currency, amount in sorted(due.items())}


def refresh_and_wait(cloud: Cloud, headers: dict[str, str]) -> dict[str, Any]:
    started = cloud.api.post("/bills/refresh", headers=headers)
    assert started.status_code == 202, started.text
    job_id = started.json()["job_id"]
    job: dict[str, Any] = wait_until(
        lambda: (
            (body := cloud.api.get(f"/bills/refresh/{job_id}", headers=headers).json())["status"] != "running" and body
        ),
        60,
        "the refresh job",
    )
    return job


def test_link_one_account_at_each_provider_and_see_its_exact_bills(cloud: Cloud) -> None:
    # Given a new user who links an account at each of the four providers, each its own way
    headers = cloud.new_user("e2e-slice@example.com")
    account_ids: dict[str, str] = {}
    for provider, (credentials, _) in E2E_LINKS.items():
        linked = cloud.api.post(
            "/accounts/link", headers=headers, json={"provider": provider, "credentials": credentials}
        )
        assert linked.status_code == 201, linked.text
        account_ids[provider] = linked.json()["account_id"]
    oauth = link_with_oauth(cloud.api, headers, "sparkgrid", "e2e")
    assert oauth.status_code == 201, oauth.text
    account_ids["sparkgrid"] = oauth.json()["account_id"]
    sandboxes = {provider: sandbox for provider, (_, sandbox) in E2E_LINKS.items()}
    sandboxes["sparkgrid"] = SandboxAccount.sparkgrid("e2e")
    # When they ask for a refresh
    job = refresh_and_wait(cloud, headers)
    assert (job["status"], job["succeeded"], job["failed"]) == ("succeeded", 4, 0), job
    # Then each provider's bills are exactly the provider's, normalised, and the totals keep currencies apart
    for provider, sandbox in sandboxes.items():
        page = cloud.api.get(f"/bills/{provider}", headers=headers).json()
        # Overdue as of the service's own reading of the clock, which the page states
        shown_on = datetime.fromisoformat(page["as_of"]).date()
        assert page["bills"] == expected_bill_views(sandbox, account_ids[provider], shown_on, cloud.today)
    page = cloud.api.get("/bills", headers=headers).json()
    assert page["totals"]["due"] == expected_due(list(sandboxes.values()), cloud.today)
    assert [account["stale"] for account in page["accounts"]] == [False] * 4, page["accounts"]


def test_requests_without_a_valid_token_are_refused_by_the_gateway(cloud: Cloud) -> None:
    assert cloud.api.get("/bills").status_code == 401
    assert cloud.api.get("/bills", headers={"Authorization": "Bearer forged.token.value"}).status_code == 403
    missing = cloud.api.get("/no/such/route")
    assert missing.status_code == 404


def test_the_schedule_refreshes_an_account_once_it_is_due(cloud: Cloud) -> None:
    # Given an account whose first fetch (enqueued by its link) is done, and which the provider then revised
    headers = cloud.new_user("e2e-schedule@example.com")
    api_key = "cw_sandbox_e2e_schedule"
    sandbox = SandboxAccount.clearwater(api_key)
    linked = cloud.api.post(
        "/accounts/link", headers=headers, json={"provider": "clearwater", "credentials": {"api_key": api_key}}
    )
    assert linked.status_code == 201, linked.text
    account_id = linked.json()["account_id"]
    wait_until(lambda: cloud.api.get("/bills", headers=headers).json()["bills"], 30, "the first fetch")
    revised_bill = sandbox.bills(cloud.today)[-1].bill_id
    sandbox_admin(
        cloud.sandbox,
        "revise/clearwater",
        {"account": sandbox.account_number, "bill_id": revised_bill, "amount": "1.23"},
    )
    # When a day passes (its next refresh is moved into the past, as time would)
    user_id = cloud.api.get("/me", headers=headers).json()["user_id"]
    due = datetime.now(UTC) - timedelta(minutes=1)
    cloud.aws("dynamodb").update_item(
        TableName="billhub-local-BillsTable",
        Key={"PK": {"S": f"USER#{user_id}"}, "SK": {"S": f"ACCOUNT#{account_id}"}},
        UpdateExpression="SET next_refresh_at = :due, GSI1SK = :key",
        ExpressionAttributeValues={
            ":due": {"S": due.isoformat()},
            ":key": {"S": refresh_sk(account_id, due, "daily")},
        },
    )

    # Then the scheduled planner refreshes it on its own, and the revision shows
    def revised_amount() -> str | None:
        bills = cloud.api.get("/bills", headers=headers).json()["bills"]
        return next((b["amount"] for b in bills if b["provider_bill_id"] == revised_bill and b["revision"] == 2), None)

    assert wait_until(revised_amount, SCHEDULE_SECONDS * 10, "the scheduled planner to refresh the account") == "1.23"


def test_the_demo_user_from_make_run_has_bills_at_every_provider(cloud: Cloud) -> None:
    headers = cloud.login(DEMO_EMAIL, DEMO_PASSWORD)

    def bills_from_every_provider() -> dict[str, Any] | None:
        page: dict[str, Any] = cloud.api.get("/bills", headers=headers).json()
        return page if len({bill["provider"] for bill in page["bills"]}) == 4 else None

    page = wait_until(bills_from_every_provider, 60, "the demo bills")
    demo_accounts = [
        SandboxAccount("northgas", DEMO_CREDENTIALS["northgas"]["account_number"]),
        SandboxAccount.clearwater(DEMO_CREDENTIALS["clearwater"]["api_key"]),
        SandboxAccount.fibrelink(DEMO_CREDENTIALS["fibrelink"]["username"]),
        SandboxAccount.sparkgrid(DEMO_OAUTH_LOGINS["sparkgrid"]),
    ]
    assert page["totals"]["due"] == expected_due(demo_accounts, cloud.today)
    # and their insights point at the water bill the sandbox planted a spike in
    insights = cloud.api.get("/insights", headers=headers, params={"months": 6}).json()
    spike = demo_accounts[1].bills(cloud.today)[ANOMALY_MONTHS_BACK]  # newest first
    assert [(bill["provider"], bill["amount"]) for bill in insights["unusual_bills"]] == [
        ("clearwater", f"{spike.amount:.2f}")
    ]
    assert {"GBP", "USD"} <= set(insights["trailing_average"])


def test_a_message_that_always_fails_reaches_the_dead_letter_queue_from_every_fetch_lane(cloud: Cloud) -> None:
    # Given a message no fetcher can read on each fetch lane (FetchQueue, and each provider's)
    sqs = cloud.aws("sqs")
    lanes = queues_bound_to(load_template(), "FetchProviderFunction")
    for lane in lanes:
        sqs.send_message(QueueUrl=cloud.queue_url(lane), MessageBody=json.dumps({"poison": lane}))
    # Then each ends in the one FetchDLQ, through its lane's redrive policy
    dlq = cloud.queue_url("FetchDLQ")
    parked: list[str] = []

    def every_lanes_parked() -> bool:
        received = sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
        parked.extend(message["Body"] for message in received)
        return len(parked) >= len(lanes)

    wait_until(every_lanes_parked, 90, "each lane's poison message in the DLQ")
    assert sorted(parked) == sorted(json.dumps({"poison": lane}) for lane in lanes)


def account_of(cloud: Cloud, headers: dict[str, str], account_id: str) -> dict[str, Any]:
    accounts = cloud.api.get("/accounts", headers=headers).json()["accounts"]
    return next(account for account in accounts if account["account_id"] == account_id)


def test_refused_duplicate_and_pending_links_over_http(cloud: Cloud) -> None:
    headers = cloud.new_user("e2e-linking@example.com")
    refused = cloud.api.post(
        "/accounts/link",
        headers=headers,
        json={"provider": "fibrelink", "credentials": {"username": "e2e-link", "password": "wrong"}},
    )
    assert (refused.status_code, refused.json()["code"]) == (422, "credentials_rejected")
    credentials = {"username": "e2e-link", "password": "pass_good"}
    sandbox_admin(cloud.sandbox, "faults/fibrelink", {"outage": True})
    try:
        pending = cloud.api.post(
            "/accounts/link", headers=headers, json={"provider": "fibrelink", "credentials": credentials}
        )
        assert (pending.status_code, pending.json()["status"]) == (201, "pending")
    finally:
        sandbox_admin(cloud.sandbox, "faults/fibrelink", {"outage": False})
    job = refresh_and_wait(cloud, headers)
    assert job["status"] == "succeeded", job
    account = account_of(cloud, headers, pending.json()["account_id"])
    assert account["status"] == "active"
    assert account["external_ref"].endswith(SandboxAccount.fibrelink("e2e-link").account_number[-4:])
    duplicate = cloud.api.post(
        "/accounts/link", headers=headers, json={"provider": "fibrelink", "credentials": credentials}
    )
    assert (duplicate.status_code, duplicate.json()["code"]) == (409, "conflict")


def test_token_expiry_revocation_and_repair_over_http(cloud: Cloud) -> None:
    # Given a SparkGrid account linked through the OAuth2 redirect, with its bills
    headers = cloud.new_user("e2e-tokens@example.com")
    linked = link_with_oauth(cloud.api, headers, "sparkgrid", "e2e-tokens")
    assert linked.status_code == 201, linked.text
    account_id = linked.json()["account_id"]
    assert refresh_and_wait(cloud, headers)["status"] == "succeeded"
    # When SparkGrid expires every access token, the next refresh renews (and rotates) and succeeds
    sandbox_admin(cloud.sandbox, "tokens/sparkgrid/expire")
    assert refresh_and_wait(cloud, headers)["status"] == "succeeded"
    # When the customer revokes the grant, the account needs them, says why, and keeps its bills
    sandbox_admin(cloud.sandbox, "tokens/sparkgrid/revoke")
    job = refresh_and_wait(cloud, headers)
    assert (job["status"], job["failed"]) == ("failed", 1), job
    assert account_of(cloud, headers, account_id)["status"] == "needs_reauth"
    assert len(cloud.api.get("/bills/sparkgrid", headers=headers).json()["bills"]) == 24
    # Then signing in again for that account repairs it in place
    repaired = link_with_oauth(cloud.api, headers, "sparkgrid", "e2e-tokens", account_id=account_id)
    assert (repaired.status_code, repaired.json()["account_id"]) == (200, account_id), repaired.text
    assert refresh_and_wait(cloud, headers)["status"] == "succeeded"
    assert account_of(cloud, headers, account_id)["status"] == "active"
    assert [a["account_id"] for a in cloud.api.get("/accounts", headers=headers).json()["accounts"]] == [account_id]


def test_pages_of_bills_and_deleting_an_account_over_http(cloud: Cloud) -> None:
    # Given a user with two accounts whose bills were fetched
    headers = cloud.new_user("e2e-delete@example.com")
    ids = []
    for key in ("cw_sandbox_e2e_keep", "cw_sandbox_e2e_drop"):
        linked = cloud.api.post(
            "/accounts/link", headers=headers, json={"provider": "clearwater", "credentials": {"api_key": key}}
        )
        assert linked.status_code == 201, linked.text
        ids.append(linked.json()["account_id"])
    assert refresh_and_wait(cloud, headers)["status"] == "succeeded"
    # When they page through their bills, 20 at a time
    seen: list[str] = []
    cursor: str | None = None
    while True:
        page = cloud.api.get("/bills", headers=headers, params={"limit": 20, **({"cursor": cursor} if cursor else {})})
        assert page.status_code == 200, page.text
        seen += [bill["bill_id"] for bill in page.json()["bills"]]
        if (cursor := page.json()["next_cursor"]) is None:
            break
    # Then they see each of the 48 bills once
    assert len(seen) == len(set(seen)) == 48
    # When they delete one account (twice: a retried request is fine)
    assert cloud.api.delete(f"/accounts/{ids[1]}", headers=headers).status_code == 204
    assert cloud.api.delete(f"/accounts/{ids[1]}", headers=headers).status_code == 204
    # Then only the other account and its bills remain, and its totals alone count
    page = cloud.api.get("/bills", headers=headers, params={"limit": 200}).json()
    assert {bill["account_id"] for bill in page["bills"]} == {ids[0]}
    assert len(page["bills"]) == 24
    assert [account["account_id"] for account in page["accounts"]] == [ids[0]]
    assert page["totals"]["due"] == expected_due([SandboxAccount.clearwater("cw_sandbox_e2e_keep")], cloud.today)
    assert [account["account_id"] for account in cloud.api.get("/accounts", headers=headers).json()["accounts"]] == [
        ids[0]
    ]
    other = cloud.new_user("e2e-delete-other@example.com")
    assert cloud.api.delete(f"/accounts/{ids[0]}", headers=other).status_code == 404


def test_the_gateway_serves_swagger_ui_and_the_committed_openapi_document(cloud: Cloud) -> None:
    page = cloud.api.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "SwaggerUIBundle" in page.text
    assert cloud.api.get("/docs/swagger-ui-bundle.min.js").status_code == 200  # served locally, not from a CDN
    document = cloud.api.get("/docs/openapi.json")
    assert document.status_code == 200
    committed = (Path(__file__).resolve().parents[2] / "docs" / "openapi.json").read_text()
    assert document.json() == json.loads(committed)


def test_a_browser_back_from_the_provider_sees_a_page_over_http(cloud: Cloud) -> None:
    # Given a user who starts linking SparkGrid, and the provider that sends their browser back
    headers = cloud.new_user("e2e-browser@example.com")
    browser = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}

    def back_from_provider(login: str) -> str:
        start = cloud.api.get("/accounts/oauth/sparkgrid/start", headers=headers)
        assert start.status_code == 200, start.text
        consent = httpx.get(f"{start.json()['authorize_url']}&{urlencode({'login_hint': login})}")
        assert consent.status_code == 302, consent.text
        return str(consent.headers["Location"])

    # When the browser arrives, it is told the account is linked, in a page with its own policy
    callback = back_from_provider("e2e-browser")
    linked = cloud.api.get(callback, headers=browser)
    assert (linked.status_code, linked.headers["content-type"]) == (201, "text/html; charset=utf-8"), linked.text
    assert (
        linked.headers["content-security-policy"]
        == "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"
    )
    assert "SparkGrid Energy account linked" in linked.text
    assert [a["provider"] for a in cloud.api.get("/accounts", headers=headers).json()["accounts"]] == ["sparkgrid"]
    # and the same link again, or a refusal at the provider, is a page saying what to do next, same status
    again = cloud.api.get(callback, headers=browser)
    assert (again.status_code, "This link request has expired" in again.text) == (400, True), again.text
    denied = cloud.api.get(back_from_provider("user_denied"), headers=browser)
    assert (denied.status_code, "did not grant access" in denied.text) == (400, True), denied.text


def test_a_users_daily_reminder_shows_among_the_local_clouds_sent_mail(cloud: Cloud) -> None:
    # Given a user with a ClearWater account, reminded of bills due within 60 days
    email = "reminded@example.com"
    headers = cloud.new_user(email)
    linked = cloud.api.post(
        "/accounts/link",
        headers=headers,
        json={"provider": "clearwater", "credentials": {"api_key": "cw_sandbox_e2e_reminders"}},
    )
    assert linked.status_code == 201, linked.text
    changed = cloud.api.patch("/me", headers=headers, json={"preferences": {"due_soon_days": 60}})
    assert changed.status_code == 200 and changed.json()["preferences"]["reminders"] is True

    def fetched() -> dict[str, Any] | None:
        page: dict[str, Any] = cloud.api.get("/bills", headers=headers).json()
        return page if page["bills"] else None

    totals = wait_until(fetched, 60, "the account's first fetch")["totals"]
    # When their reminder comes due (as the next 08:00 UTC would make it), and the schedule runs
    table = BillsTable(cloud.aws("dynamodb"), "billhub-local-BillsTable")
    user_id = table.users.user_id_for_email(email)
    assert user_id is not None
    assert table.reminders.reschedule_reminder(user_id, datetime.now(UTC))
    # Then the mail moto's SES took holds their email, listing as many bills as GET /bills counts
    listed = totals["due_soon_count"] + totals["overdue_count"]
    mails_url = f"{cloud.aws_endpoint}/_localcloud/emails"

    def their_mail() -> list[dict[str, Any]] | None:
        mails = [mail for mail in httpx.get(mails_url).json() if mail["to"] == email]
        return mails or None

    if listed == 0:  # nothing due within 60 days on this date of the sandbox: no email, after a run
        time.sleep(3 * SCHEDULE_SECONDS)
        assert their_mail() is None
        return
    (mail,) = wait_until(their_mail, 10 * SCHEDULE_SECONDS, "the reminder email")
    assert mail["subject"] == reminder_subject(totals["due_soon_count"], totals["overdue_count"])
    assert "ClearWater Utilities" in mail["text"] and "ClearWater Utilities" in mail["html"]
    assert mail["sent_at"] is not None
