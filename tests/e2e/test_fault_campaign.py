"""The fault campaign: 200 accounts across the four providers, refreshed while the sandbox injects
5xx, timeouts, slowness, a 429 storm, token expiry and a full outage of one provider, all through the
whole local cloud (gateway, moto's server, SQS poller, fetcher workers, sandbox over HTTP); and all
along, linking included, DynamoDB throttles, conflicts with transactions in flight and fails inside
(moto's fault mode) a share of its requests.

It proves what a user and an operator rely on: every account ends refreshed or honestly marked, its
last good bills intact, no bill lost or duplicated; no provider ever saw more requests in a second
than its limit; each incident raised exactly one alert; deferred fetches never reached the DLQ,
while a poison message did; the API never answered a 5xx. Every user has a webhook, on a receiver
that fails a share of its first requests: each account's account.synced and each job's
refresh.completed reaches it, none lost and none answered 2xx twice (by event id). The figures, the
DynamoDB faults injected and absorbed among them, are written to ``campaign.json`` beside the logs.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import standardwebhooks

from localcloud.demo import link_with_oauth
from localcloud.moto_faults import FAULTS_PATH
from tests.e2e.harness import Cloud, local_cloud, wait_until
from tests.sandbox import SandboxAccount, sandbox_admin
from tests.webhook_receiver import Receiver, serving

USERS = 25
ACCOUNTS_PER_PROVIDER = 2  # per user: 25 users x 4 providers x 2 = 200 accounts
PROVIDER_LIMITS = {"sparkgrid": 20, "northgas": 10, "clearwater": 25, "fibrelink": 15}
FAULTS: dict[str, dict[str, Any]] = {
    "northgas": {"outage": True},
    "sparkgrid": {"latency_ms": 30, "jitter_ms": 60},
    "clearwater": {"error_rate": 0.3, "timeout_rate": 0.05, "hang_ms": 1500},
    "fibrelink": {"storm_429": True},
}


# And DynamoDB itself, all along (linking included): this share of its requests is throttled, meets a
# transaction in flight or fails inside DynamoDB (moto's fault mode, localcloud/moto_faults.py). botocore
# sends a request 4 times at most: one of the campaign's ~6,000 requests meets 4 faults in a row about
# once in 200 runs (6,000 x 0.03^4), and nothing retries that one further.
DYNAMODB_FAULT_RATE = 0.03
DYNAMODB_FAULT_SEED = 15
FAULT_CODES = {
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "TransactionConflictException",
    "TransactionCanceledException",
    "InternalServerError",
}
# The users' webhook receiver answers 500 to every other one of its first requests (then 204): the
# deliveries it fails are retried (the local cloud retries within seconds).
RECEIVER_SCRIPT = [500, 204] * 20
# How a DynamoDB error that reached the service's code reads in a log (botocore's ClientError).
_CLIENT_ERROR = re.compile(r"An error occurred \((\w+)\) when calling the (\w+) operation")


class ApiAnswers:
    """Every answer the campaign got from the API, by status; the 5xx ones kept whole."""

    def __init__(self) -> None:
        self.statuses: Counter[int] = Counter()
        self.server_errors: list[str] = []

    def __call__(self, response: httpx.Response) -> None:
        self.statuses[response.status_code] += 1
        if response.status_code >= 500:
            response.read()
            self.server_errors.append(f"{response.request.method} {response.request.url.path}: {response.text}")


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    overrides = {
        "ManualRefreshMinIntervalSeconds": "0",
        "ProviderReadTimeoutSeconds": "1",
        "CircuitRecoverySeconds": "4",
        "FetchMaxReceiveCount": "3",
    }
    with local_cloud(
        tmp_path_factory.mktemp("campaign"),
        LOCALCLOUD_SEED="0",
        LOCALCLOUD_SCHEDULE_SECONDS="3600",  # only the campaign's own refreshes
        LOCALCLOUD_PARAMETER_OVERRIDES=json.dumps(overrides),
        LOCALCLOUD_DYNAMODB_FAULT_RATE=str(DYNAMODB_FAULT_RATE),
        LOCALCLOUD_DYNAMODB_FAULT_SEED=str(DYNAMODB_FAULT_SEED),
    ) as started:
        yield started


@pytest.fixture(scope="module")
def api_answers(cloud: Cloud) -> ApiAnswers:
    answers = ApiAnswers()
    cloud.api.event_hooks["response"].append(answers)
    return answers


class Population:
    """The campaign's users and, per account, what the sandbox holds for it."""

    def __init__(self) -> None:
        self.users: list[dict[str, str]] = []
        self.sandbox: dict[str, SandboxAccount] = {}
        self.webhook_secrets: dict[str, str] = {}  # webhook id -> its secret

    def link_everyone(self, cloud: Cloud, receiver: Receiver) -> None:
        for number in range(USERS):
            headers = cloud.new_user(f"campaign-{number}@example.com")
            self.users.append(headers)
            webhook = cloud.api.post("/webhooks", headers=headers, json={"url": receiver.url})
            assert webhook.status_code == 201, webhook.text
            self.webhook_secrets[webhook.json()["webhook_id"]] = webhook.json()["secret"]
            for copy in range(ACCOUNTS_PER_PROVIDER):
                tag = f"c{number}x{copy}"
                links = {
                    "northgas": {"account_number": f"NG7{number:03d}{copy:03d}", "postcode": "NG1 1AA"},
                    "clearwater": {"api_key": f"cw_sandbox_{tag}"},
                    "fibrelink": {"username": tag, "password": "pass_good"},
                }
                for provider, credentials in links.items():
                    linked = cloud.api.post(
                        "/accounts/link", headers=headers, json={"provider": provider, "credentials": credentials}
                    )
                    assert linked.status_code == 201, linked.text
                    self.sandbox[linked.json()["account_id"]] = _sandbox_of(provider, credentials)
                oauth = link_with_oauth(cloud.api, headers, "sparkgrid", tag)
                assert oauth.status_code == 201, oauth.text
                self.sandbox[oauth.json()["account_id"]] = SandboxAccount.sparkgrid(tag)
            # Each link enqueued its first fetch; a person links a handful of accounts, not hundreds at
            # once, so the next user starts once this one's first bills are in.
            wait_until(functools.partial(self.all_fetched, cloud, headers), 120, f"user {number}'s first fetches", 0.5)

    @staticmethod
    def all_fetched(cloud: Cloud, headers: dict[str, str]) -> bool:
        accounts = cloud.api.get("/accounts", headers=headers).json()["accounts"]
        return all(account["last_success_at"] for account in accounts)

    def start_refresh(self, cloud: Cloud) -> Callable[[float], list[dict[str, Any]]]:
        """Starts every user's refresh now; the returned call waits (at most its timeout) for the jobs."""
        job_ids = []
        for headers in self.users:
            started = cloud.api.post("/bills/refresh", headers=headers)
            assert started.status_code == 202, started.text
            job_ids.append((headers, started.json()["job_id"]))

        def finished(timeout: float) -> list[dict[str, Any]]:
            def all_done() -> list[dict[str, Any]] | None:
                answers = [cloud.api.get(f"/bills/refresh/{job}", headers=headers) for headers, job in job_ids]
                assert all(answer.status_code == 200 for answer in answers), [a.text for a in answers]
                jobs = [answer.json() for answer in answers]
                return jobs if all(job["status"] != "running" for job in jobs) else None

            jobs: list[dict[str, Any]] = wait_until(all_done, timeout, "every refresh job to finish", interval=1.0)
            return jobs

        return finished

    def accounts_and_bills(self, cloud: Cloud) -> tuple[dict[str, dict[str, Any]], dict[str, list[dict[str, Any]]]]:
        accounts: dict[str, dict[str, Any]] = {}
        bills: dict[str, list[dict[str, Any]]] = {account_id: [] for account_id in self.sandbox}
        for headers in self.users:
            for account in cloud.api.get("/accounts", headers=headers).json()["accounts"]:
                accounts[account["account_id"]] = account
            cursor: str | None = None
            while True:  # every page (each user holds 192 bills)
                page = cloud.api.get(
                    "/bills", headers=headers, params={"limit": 100, **({"cursor": cursor} if cursor else {})}
                ).json()
                for bill in page["bills"]:
                    bills[bill["account_id"]].append(bill)
                if (cursor := page["next_cursor"]) is None:
                    break
        return accounts, bills


def _sandbox_of(provider: str, credentials: dict[str, str]) -> SandboxAccount:
    if provider == "northgas":
        return SandboxAccount("northgas", credentials["account_number"])
    if provider == "clearwater":
        return SandboxAccount.clearwater(credentials["api_key"])
    return SandboxAccount.fibrelink(credentials["username"])


def assert_bills_exactly_the_providers(population: Population, cloud: Cloud) -> dict[str, dict[str, Any]]:
    accounts, bills = population.accounts_and_bills(cloud)
    assert len(accounts) == len(population.sandbox) == USERS * 4 * ACCOUNTS_PER_PROVIDER
    for account_id, sandbox in population.sandbox.items():
        held = sorted((bill["provider_bill_id"], bill["amount"]) for bill in bills[account_id])
        expected = sorted((bill.bill_id, f"{bill.amount:.2f}") for bill in sandbox.bills(cloud.today))
        assert held == expected, f"{sandbox.provider} account {account_id} holds other bills than its provider"
    return accounts


def alert_inbox(cloud: Cloud) -> Any:
    sqs = cloud.aws("sqs")
    url = sqs.create_queue(QueueName="campaign-alerts")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    cloud.aws("sns").subscribe(TopicArn=cloud.topic_arn("AdminAlerts"), Protocol="sqs", Endpoint=arn)
    received: list[dict[str, Any]] = []

    def read() -> list[dict[str, Any]]:
        while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages"):
            for message in messages:
                received.append(json.loads(json.loads(message["Body"])["Message"]))
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        return received

    return read


def emf_totals(cloud: Cloud) -> Counter[str]:
    """The fetcher's own metrics, summed from the EMF lines in its log."""
    totals: Counter[str] = Counter()
    for line in (cloud.logs / "FetchProviderFunction.log").read_text(errors="replace").splitlines():
        if '"_aws"' not in line:
            continue
        document = json.loads(line)
        for name in ("Fetches", "FetchSucceeded", "FetchFailed", "FetchDeferred", "FetchNeedsReauth", "FetchRetries"):
            totals[f"{document['provider']}.{name}"] += int(sum(document.get(name, [0])))
    return totals


def dynamodb_faults(cloud: Cloud) -> dict[str, Any]:
    """What moto's fault mode injected, per kind and operation."""
    report: dict[str, Any] = httpx.get(f"{cloud.aws_endpoint}{FAULTS_PATH}", timeout=10).json()
    return report


def faults_the_functions_met(cloud: Cloud) -> dict[str, Counter[str]]:
    """Per function, the DynamoDB errors its log tells (``code@operation``): those that got past botocore's
    retries and the store's and failed a request or an invocation."""
    met: dict[str, Counter[str]] = {}
    for log in sorted(cloud.logs.glob("*Function.log")):
        errors = Counter(
            f"{code}@{operation}"
            for code, operation in _CLIENT_ERROR.findall(log.read_text(errors="replace"))
            if code in FAULT_CODES
        )
        if errors:
            met[log.stem] = errors
    return met


def webhook_successes(receiver: Receiver, secrets: dict[str, str]) -> Counter[tuple[str, str]]:
    """(event type, event id) of each request the receiver answered 2xx, each signature verified with one
    of the users' secrets."""
    verifiers = [standardwebhooks.Webhook(secret) for secret in secrets.values()]
    successes: Counter[tuple[str, str]] = Counter()
    for request, status in zip(list(receiver.requests), list(receiver.statuses), strict=False):
        payload = None
        for verifier in verifiers:
            with contextlib.suppress(standardwebhooks.WebhookVerificationError):
                payload = verifier.verify(request.body, request.headers)
                break
        assert payload is not None, f"a request no user's secret signed: {request.headers}"
        if 200 <= status < 300:
            successes[(payload["type"], request.headers["webhook-id"])] += 1
    return successes


def test_two_hundred_accounts_survive_a_fault_campaign(cloud: Cloud, api_answers: ApiAnswers) -> None:
    with serving(Receiver(script=list(RECEIVER_SCRIPT))) as receiver:
        _campaign(cloud, api_answers, receiver)


def _campaign(cloud: Cloud, api_answers: ApiAnswers, receiver: Receiver) -> None:
    began = time.monotonic()
    inbox = alert_inbox(cloud)
    population = Population()
    # Given 200 linked accounts across the four providers, each fetched once (by its link) while all is
    # well, and each of their users with a webhook
    population.link_everyone(cloud, receiver)
    linked_in = time.monotonic() - began
    assert_bills_exactly_the_providers(population, cloud)
    assert inbox() == []

    # When the providers misbehave during the next refresh, and a poison message arrives
    cloud.aws("sqs").send_message(QueueUrl=cloud.queue_url("FetchQueue"), MessageBody='{"poison": true}')
    before_faults = datetime.now(UTC)
    for provider, faults in FAULTS.items():
        sandbox_admin(cloud.sandbox, f"faults/{provider}", faults)
    sandbox_admin(cloud.sandbox, "tokens/sparkgrid/expire")
    fault_phase = time.monotonic()
    refreshing = population.start_refresh(cloud)
    # The outage opens NorthGas's circuit; then the outage and the storm end and the providers recover
    wait_until(lambda: any(a["incident"] == "circuit-open#northgas" for a in inbox()), 60, "NorthGas's circuit to open")
    sandbox_admin(cloud.sandbox, "faults/northgas", {"outage": False})
    sandbox_admin(cloud.sandbox, "faults/fibrelink", {"storm_429": False})
    jobs = refreshing(240)
    campaign_seconds = time.monotonic() - fault_phase

    # Then every account is refreshed or says honestly why not, with exactly its provider's bills
    accounts = assert_bills_exactly_the_providers(population, cloud)
    refreshed = [
        a for a in accounts.values() if a["last_success_at"] and a["last_success_at"] > before_faults.isoformat()
    ]
    honest = [a for a in accounts.values() if a not in refreshed and a["last_error"]]
    assert len(refreshed) + len(honest) == len(accounts)
    assert {a["status"] for a in accounts.values()} == {"active"}  # no healthy account was flagged for its user
    # No provider ever saw more requests in one second than its limit
    stats = httpx.get(f"{cloud.sandbox}/_admin/stats").json()
    for provider, limit in PROVIDER_LIMITS.items():
        assert stats[provider]["max_requests_in_one_second"] <= limit, (provider, stats[provider])
    # One alert per incident, and the outage was one of them
    incidents = Counter(alert["incident"] for alert in inbox())
    assert incidents["circuit-open#northgas"] == 1
    assert set(incidents.values()) == {1}, incidents
    # The DLQ holds the poison message and nothing deferred
    dlq = cloud.queue_url("FetchDLQ")
    parked = wait_until(
        lambda: (
            cloud.aws("sqs").receive_message(QueueUrl=dlq, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages")
        ),
        30,
        "the poison message in the DLQ",
    )
    assert [message["Body"] for message in parked] == ['{"poison": true}']

    # No answer of the API was a 5xx that a retry (botocore's, the service's) would have avoided
    assert api_answers.server_errors == []
    # while every kind of DynamoDB fault was injected
    injected = dynamodb_faults(cloud)
    assert set(injected["injected"]) == {"throughput", "throttling", "conflict", "internal"}, injected

    # Every account's account.synced and every job's refresh.completed reached the receiver, each
    # answered 2xx exactly once, and nothing was parked in the delivery DLQ
    expected = len(accounts) + len(jobs)

    def all_delivered() -> Counter[tuple[str, str]] | None:
        successes = webhook_successes(receiver, population.webhook_secrets)
        return successes if len(successes) >= expected else None

    successes = wait_until(all_delivered, 120, "every event at the webhook receiver", interval=1.0)
    kinds = Counter(kind for kind, _ in successes)
    assert kinds == {"account.synced": len(accounts), "refresh.completed": len(jobs)}, kinds
    assert set(successes.values()) == {1}, [key for key, count in successes.items() if count > 1]
    delivery_dlq = cloud.aws("sqs").receive_message(QueueUrl=cloud.queue_url("DeliveryDLQ"), WaitTimeSeconds=1)
    assert delivery_dlq.get("Messages", []) == []

    totals = emf_totals(cloud)
    met = faults_the_functions_met(cloud)
    escaped = sum(sum(errors.values()) for errors in met.values())
    figures = {
        "accounts": len(accounts),
        "linking_seconds": round(linked_in, 1),
        "fault_phase_seconds": round(campaign_seconds, 1),
        "total_seconds": round(time.monotonic() - began, 1),
        "faults": FAULTS,
        "jobs": Counter(job["status"] for job in jobs),
        "refreshed_during_faults": len(refreshed),
        "honest_errors": Counter(a["last_error"] for a in honest),
        "incidents": incidents,
        "webhook_events": dict(kinds),
        "webhook_requests": len(receiver.requests),
        "webhook_answers": dict(Counter(receiver.statuses)),
        "provider_requests": {p: stats[p]["requests"] for p in PROVIDER_LIMITS},
        "provider_answers": {p: stats[p]["by_status"] for p in PROVIDER_LIMITS},
        "max_requests_in_one_second": {p: stats[p]["max_requests_in_one_second"] for p in PROVIDER_LIMITS},
        "fetch_metrics": dict(totals),
        "dynamodb_faults": {
            "rate": injected["rate"],
            "seed": injected["seed"],
            "injected": injected["injected"],
            "injected_total": injected["total"],
            # Absorbed below the functions' handlers: throttles and 500s by botocore's retries, conflicts by
            # the store's; what got past them failed a request or an invocation, as a function's log tells:
            "absorbed": injected["total"] - escaped,
            "failed_in_functions": met,
            # and what the campaign saw of them: no API answer a 5xx, no bill lost or duplicated
            "api_answers": dict(sorted(api_answers.statuses.items())),
            "api_5xx": len(api_answers.server_errors),
        },
    }
    (cloud.logs / "campaign.json").write_text(json.dumps(figures, indent=2, default=str))
    print(json.dumps(figures, default=str))
