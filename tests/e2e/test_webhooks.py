"""Webhooks end to end, as `make run` runs them: the API registers a receiver on loopback, the fetcher
puts events on moto's EventBridge bus, its rule routes them to the delivery queue, the poller runs the
delivery function, and the receiver verifies every request with `standardwebhooks`, as a client would."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import standardwebhooks

from tests.e2e.harness import Cloud, local_cloud, wait_until
from tests.sandbox import SandboxAccount, sandbox_admin
from tests.webhook_receiver import Received, Receiver, serving

# A retry comes 1 s, then 1 s, then 2 s after a failure, so four attempts take seconds.
RETRY_DELAYS = "1,1,2,4,8"


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    workdir: Path = tmp_path_factory.mktemp("webhooks")
    with local_cloud(
        workdir,
        LOCALCLOUD_SEED="0",
        LOCALCLOUD_WEBHOOK_RETRY_DELAYS=RETRY_DELAYS,
        LOCALCLOUD_PARAMETER_OVERRIDES=json.dumps({"ManualRefreshMinIntervalSeconds": "0"}),
    ) as started:
        yield started


@pytest.fixture(scope="module")
def someone(cloud: Cloud) -> dict[str, str]:
    return cloud.new_user("e2e-webhooks-refused@example.com")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with serving(Receiver()) as started:
        yield started


def register(cloud: Cloud, headers: dict[str, str], url: str, **fields: Any) -> dict[str, Any]:
    created = cloud.api.post("/webhooks", headers=headers, json={"url": url, **fields})
    assert created.status_code == 201, created.text
    body: dict[str, Any] = created.json()
    assert body["secret"].startswith("whsec_")
    return body


def verified(request: Received, *secrets: str) -> dict[str, Any]:
    """The request's payload, after each secret verified its signature (as Standard Webhooks does)."""
    payload: dict[str, Any] = {}
    for secret in secrets:
        payload = standardwebhooks.Webhook(secret).verify(request.body, request.headers)
    return payload


def events_of(receiver: Receiver, secret: str, event_type: str) -> list[tuple[str, dict[str, Any]]]:
    """(webhook-id, payload) of each request of ``event_type`` the receiver got, every one verified."""
    found = []
    for request in list(receiver.requests):
        payload = verified(request, secret)
        if payload["type"] == event_type:
            found.append((request.headers["webhook-id"], payload))
    return found


def test_each_change_reaches_the_receiver_once_signed(cloud: Cloud, receiver: Receiver) -> None:
    # Given a user with a webhook on this machine
    headers = cloud.new_user("e2e-webhooks@example.com")
    webhook = register(cloud, headers, receiver.url, description="e2e receiver")
    secret = webhook["secret"]
    listed = cloud.api.get("/webhooks", headers=headers).json()["webhooks"]
    assert [w["webhook_id"] for w in listed] == [webhook["webhook_id"]] and "secret" not in listed[0]

    # When they link a ClearWater account, Then one account.synced arrives, with its bill count, and no
    # bill.created for the bills it already had
    api_key = "cw_sandbox_e2e_webhooks"
    linked = cloud.api.post(
        "/accounts/link", headers=headers, json={"provider": "clearwater", "credentials": {"api_key": api_key}}
    )
    assert linked.status_code == 201, linked.text
    account_id = linked.json()["account_id"]
    synced = wait_until(lambda: events_of(receiver, secret, "account.synced"), 60, "account.synced")
    ((_, payload),) = synced
    sandbox = SandboxAccount.clearwater(api_key)
    assert payload["data"]["account"]["account_id"] == account_id
    assert payload["data"]["bills"] == len(sandbox.bills(cloud.today))
    assert events_of(receiver, secret, "bill.created") == []

    # When the provider revises a bill and the user refreshes, Then one bill.updated with the new amount,
    # and the job's refresh.completed
    revised = sandbox.bills(cloud.today)[-1].bill_id
    sandbox_admin(
        cloud.sandbox, "revise/clearwater", {"account": sandbox.account_number, "bill_id": revised, "amount": "7.77"}
    )
    started = cloud.api.post("/bills/refresh", headers=headers)
    assert started.status_code == 202, started.text
    completed = wait_until(lambda: events_of(receiver, secret, "refresh.completed"), 60, "refresh.completed")
    assert completed[0][1]["data"]["job"]["job_id"] == started.json()["job_id"]
    ((_, update),) = wait_until(lambda: events_of(receiver, secret, "bill.updated"), 30, "bill.updated")
    assert (update["data"]["bill"]["provider_bill_id"], update["data"]["bill"]["amount"]) == (revised, "7.77")

    # When FibreLink refuses the credentials of a linked account, Then account.needs_reauth
    fibrelink = cloud.api.post(
        "/accounts/link",
        headers=headers,
        json={"provider": "fibrelink", "credentials": {"username": "e2ehooks", "password": "pass_good"}},
    )
    assert fibrelink.status_code == 201, fibrelink.text
    wait_until(lambda: len(events_of(receiver, secret, "account.synced")) == 2, 60, "FibreLink's account.synced")
    sandbox_admin(cloud.sandbox, "faults/fibrelink", {"auth_failure": True})
    try:
        assert cloud.api.post("/bills/refresh", headers=headers).status_code == 202
        ((_, reauth),) = wait_until(lambda: events_of(receiver, secret, "account.needs_reauth"), 60, "needs_reauth")
    finally:
        sandbox_admin(cloud.sandbox, "faults/fibrelink", {"auth_failure": False})
    assert reauth["data"]["account"]["account_id"] == fibrelink.json()["account_id"]
    assert reauth["data"]["account"]["status"] == "needs_reauth"

    # When the user repairs it, Then account.restored
    repaired = cloud.api.put(
        f"/accounts/{fibrelink.json()['account_id']}/credentials",
        headers=headers,
        json={"credentials": {"username": "e2ehooks", "password": "pass_good"}},
    )
    assert repaired.status_code == 200, repaired.text
    ((_, restored),) = wait_until(lambda: events_of(receiver, secret, "account.restored"), 60, "account.restored")
    assert restored["data"]["account"]["status"] == "active"

    # And every request verified, and no event came twice
    ids = Counter(request.headers["webhook-id"] for request in receiver.requests)
    assert max(ids.values()) == 1, ids


def test_a_receiver_failing_three_times_gets_one_delivery_of_four_attempts(cloud: Cloud) -> None:
    # Given a webhook whose receiver answers 500 three times, then 204
    headers = cloud.new_user("e2e-webhooks-retry@example.com")
    with serving(Receiver(script=[500, 500, 500])) as flaky:
        webhook = register(cloud, headers, flaky.url, events=["webhook.test"])
        # When a test event is sent
        sent = cloud.api.post(f"/webhooks/{webhook['webhook_id']}/test", headers=headers)
        assert sent.status_code == 202, sent.text
        # Then the log shows one delivery, delivered at the fourth attempt
        log = f"/webhooks/{webhook['webhook_id']}/deliveries"

        def delivered() -> dict[str, Any] | None:
            deliveries = cloud.api.get(log, headers=headers).json()["deliveries"]
            return deliveries[0] if deliveries and deliveries[0]["state"] == "delivered" else None

        delivery = wait_until(delivered, 60, "the fourth attempt")
    assert (delivery["attempts"], delivery["last_status_code"], delivery["event_type"]) == (4, 204, "webhook.test")
    # And the four requests carried the same webhook-id and body, each signed
    assert len(flaky.requests) == 4
    assert {request.headers["webhook-id"] for request in flaky.requests} == {delivery["event_id"]}
    assert len({request.body for request in flaky.requests}) == 1
    for request in flaky.requests:
        verified(request, webhook["secret"])


def test_a_rotated_secret_signs_beside_the_new_one(cloud: Cloud, receiver: Receiver) -> None:
    headers = cloud.new_user("e2e-webhooks-rotate@example.com")
    webhook = register(cloud, headers, receiver.url, events=["webhook.test"])
    rotated = cloud.api.post(f"/webhooks/{webhook['webhook_id']}/rotate-secret", headers=headers)
    assert rotated.status_code == 200, rotated.text
    new_secret = rotated.json()["secret"]
    assert new_secret != webhook["secret"]
    assert cloud.api.post(f"/webhooks/{webhook['webhook_id']}/test", headers=headers).status_code == 202
    (request,) = wait_until(lambda: list(receiver.requests), 30, "the test delivery")
    # Within the overlap both secrets verify the one request (two signatures in its header)
    assert verified(request, webhook["secret"], new_secret)["type"] == "webhook.test"
    assert len(request.headers["webhook-signature"].split(" ")) == 2


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.example.com/billhub",  # http to a host that is not this machine
        "https://10.0.0.1/hook",  # private
        "https://169.254.169.254/latest/meta-data",  # the metadata service (link-local)
        "https://[::ffff:10.0.0.1]/hook",  # IPv4-mapped private
        "https://[fd00:ec2::254]/hook",  # AWS's IPv6 metadata address (unique local)
        "https://user:secret@hooks.example.com/hook",  # credentials in the URL
        "ftp://hooks.example.com/hook",
    ],
)
def test_each_refused_url_class_is_a_4xx_with_a_reason(cloud: Cloud, someone: dict[str, str], url: str) -> None:
    refused = cloud.api.post("/webhooks", headers=someone, json={"url": url})
    assert 400 <= refused.status_code < 500, refused.text
    assert refused.json()["code"] and refused.json()["message"]
