"""Webhook delivery against a real receiver on 127.0.0.1 and moto's table and KMS: signed as Standard
Webhooks verify it, retried on the schedule with the same webhook-id, never redirected, refused when the
host resolves to a private or metadata address, one delivery per event and webhook, a webhook that only
fails disabled after 3 days, one slow receiver never holding up another; and the handler's partial
batch failures through an SQS-shaped event."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import httpx
import pytest
import standardwebhooks

from billhub import webhook_delivery, webhooks
from billhub.credentials import CredentialVault
from billhub.events import Event, event_id
from billhub.store import BillsTable
from billhub.webhook_delivery import (
    DISABLED_REASON,
    RetryMessage,
    RetrySchedule,
    WebhookDeliverer,
    delivery_client,
)
from billhub.webhook_models import Delivery, DeliveryRef, Webhook, WebhookSecret
from billhub.webhook_urls import Resolver, UrlPolicy
from localcloud.provision import Stack
from tests.conftest import Clock
from tests.events import sqs_event
from tests.integration.harness import LambdaContext
from tests.webhook_receiver import Receiver, serving

USER = "u1"
SCHEDULE = RetrySchedule((1, 1, 1))
LOOPBACK = UrlPolicy(allow_loopback_http=True)


def _receive_within(sqs: Any, queue_url: str, seconds: float) -> list[dict[str, Any]]:
    """The messages that become visible on the queue within ``seconds`` (polled, not long-polled: under
    libfaketime in-process moto's timed wait would never wake)."""
    deadline = time.monotonic() + seconds
    while True:
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
        if messages or time.monotonic() > deadline:
            return [dict(message) for message in messages]
        time.sleep(0.05)


def _secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(24)).decode()


# ------------------------------------------------------------------ the receiver
@pytest.fixture
def receivers() -> Iterator[Callable[..., Receiver]]:
    with contextlib.ExitStack() as stack_of_receivers:
        yield lambda **options: stack_of_receivers.enter_context(serving(Receiver(**options)))


# ------------------------------------------------------------------ the service's side


@dataclass
class Sent:
    ref: DeliveryRef
    attempts: int
    delay_seconds: int


class RecordedRetries:
    def __init__(self) -> None:
        self.sent: list[Sent] = []

    def send(self, ref: DeliveryRef, attempts: int, delay_seconds: int) -> None:
        self.sent.append(Sent(ref, attempts, delay_seconds))


@dataclass
class Service:
    table: BillsTable
    vault: CredentialVault
    clock: Clock
    retries: RecordedRetries = field(default_factory=RecordedRetries)
    resolve: Resolver | None = None
    policy: UrlPolicy = LOOPBACK
    schedule: RetrySchedule = SCHEDULE
    requests_made: int = 0
    client: Callable[[], httpx.AsyncClient] = delivery_client

    def webhook(
        self, url: str, webhook_id: str = "wh_1", events: tuple[Any, ...] | None = None, secrets: tuple[str, ...] = ()
    ) -> Webhook:
        sealed = tuple(
            WebhookSecret(ciphertext=self.vault.encrypt(USER, webhook_id, {"secret": s}), created_at=self.clock.now)
            for s in (secrets or (_secret(),))
        )
        webhook = Webhook(
            webhook_id=webhook_id, user_id=USER, url=url, events=events, created_at=self.clock.now, secrets=sealed
        )
        assert self.table.webhooks.create_webhook(webhook, limit=10)
        return webhook

    def handle(self, body: str) -> None:
        asyncio.run(self._handle(body))

    async def _handle(self, body: str) -> None:
        async with self.client() as client:

            async def count(request: httpx.Request) -> None:
                self.requests_made += 1

            client.event_hooks["request"] = [count]
            deliverer = WebhookDeliverer(
                self.table.webhooks,
                self.table.deliveries,
                self.vault,
                self.retries,
                client,
                self.policy,
                self.schedule,
                self.clock,
                resolve=self.resolve,
            )
            await deliverer.handle(body)

    def publish(self, event: Event) -> None:
        self.handle(envelope(event))

    def run_retries(self) -> None:
        """Handles every retry sent so far, in order, each once its delay has passed on the clock."""
        while self.retries.sent:
            sent = self.retries.sent.pop(0)
            self.clock.advance(seconds=sent.delay_seconds)
            self.handle(RetryMessage(retry=sent.ref, attempts=sent.attempts).model_dump_json())

    def delivery(self, webhook: Webhook, event: Event) -> Delivery | None:
        return self.table.deliveries.get_delivery(
            DeliveryRef(
                user_id=USER, webhook_id=webhook.webhook_id, occurred_at=event.occurred_at, event_id=event.event_id
            )
        )


def webhook_vault(stack: Stack) -> CredentialVault:
    """The vault the webhooks' secrets are sealed with, as the webhooks and delivery functions build it."""
    return CredentialVault(boto3.client("kms"), stack.refs["CredentialsKey"], purpose=webhooks.SECRET_PURPOSE)


@pytest.fixture
def service(stack: Stack, clock: Clock) -> Service:
    table = BillsTable(boto3.client("dynamodb"), stack.refs["BillsTable"])
    return Service(table, webhook_vault(stack), clock)


def bill_created(clock: Clock, number: int = 1) -> Event:
    return Event(
        event_id=event_id("bill.created", "acc_1", str(number)),
        type="bill.created",
        user_id=USER,
        occurred_at=clock.now,
        data={"bill": {"bill_id": f"bill_{number}", "amount": "12.34", "note": "café"}},
    )


def envelope(event: Event) -> str:
    """The message the bus's rule puts on the delivery queue."""
    return json.dumps(
        {
            "version": "0",
            "id": "5e6b2b2a-0000-4000-8000-000000000000",
            "detail-type": event.type,
            "source": "billhub",
            "account": "123456789012",
            "time": event.occurred_at.isoformat(),
            "region": "us-east-1",
            "resources": [],
            "detail": json.loads(event.model_dump_json()),
        }
    )


# ------------------------------------------------------------------ the tests


def test_a_delivered_event_verifies_at_the_receiver(service: Service, receivers: Callable[..., Receiver]) -> None:
    receiver = receivers()
    secret = _secret()
    webhook = service.webhook(receiver.url, secrets=(secret,))
    event = bill_created(service.clock)

    service.publish(event)

    [request] = receiver.requests
    assert standardwebhooks.Webhook(secret).verify(request.body, request.headers) == event.payload()
    assert request.headers["webhook-id"] == event.event_id
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == "billhub-webhooks/1"
    assert request.headers["webhook-timestamp"] == str(int(service.clock.now.timestamp()))
    delivery = service.delivery(webhook, event)
    assert delivery is not None
    assert (delivery.state, delivery.attempts, delivery.last_status_code) == ("delivered", 1, 204)
    assert service.retries.sent == []


def test_three_failures_then_a_success_is_one_delivery_of_four_attempts_with_one_id(
    service: Service, receivers: Callable[..., Receiver]
) -> None:
    receiver = receivers(script=[500, 500, 500], default=204)
    secret = _secret()
    webhook = service.webhook(receiver.url, secrets=(secret,))
    event = bill_created(service.clock)

    service.publish(event)
    # The first retry waits its delay (1 s, lengthened by up to 20%)
    [first_retry] = service.retries.sent
    assert 1 <= first_retry.delay_seconds <= 2
    pending = service.delivery(webhook, event)
    assert pending is not None and (pending.state, pending.attempts, pending.last_status_code) == ("pending", 1, 500)
    service.run_retries()

    assert len(receiver.requests) == 4
    assert {request.headers["webhook-id"] for request in receiver.requests} == {event.event_id}
    # The body is the same each time; each attempt signs its own timestamp
    assert {request.body for request in receiver.requests} == {receiver.requests[0].body}
    for request in receiver.requests:
        standardwebhooks.Webhook(secret).verify(request.body, request.headers)
    delivery = service.delivery(webhook, event)
    assert delivery is not None
    assert (delivery.state, delivery.attempts, delivery.next_attempt_at) == ("delivered", 4, None)


def test_a_receiver_that_never_succeeds_fails_after_the_schedule(
    service: Service, receivers: Callable[..., Receiver]
) -> None:
    receiver = receivers(default=503, answer_body=b"x" * 10_000)
    webhook = service.webhook(receiver.url)
    event = bill_created(service.clock)

    service.publish(event)
    service.run_retries()

    # One attempt and one retry per delay of the schedule, then no more
    assert len(receiver.requests) == 1 + len(SCHEDULE.delays)
    delivery = service.delivery(webhook, event)
    assert delivery is not None
    assert (delivery.state, delivery.attempts, delivery.next_attempt_at) == ("failed", 4, None)
    assert delivery.last_status_code == 503
    # Only a short excerpt of the answer is kept
    assert delivery.response_excerpt == "x" * 200


def test_only_the_start_of_an_endless_answer_is_read(
    service: Service, receivers: Callable[..., Receiver], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(webhook_delivery, "ATTEMPT_SECONDS", 3.0)
    # An answer of 1 MB whose first 8 KB come at once and the rest never (within the attempt)
    receiver = receivers(default=500, answer_body="é".encode() * 500_000, trickle=threading.Event())
    webhook = service.webhook(receiver.url)
    event = bill_created(service.clock)

    began = time.monotonic()
    service.publish(event)

    # The attempt ended on its status, not on the timeout waiting for the rest
    assert time.monotonic() - began < 3
    delivery = service.delivery(webhook, event)
    assert delivery is not None
    assert (delivery.last_status_code, delivery.last_error) == (500, "answered 500")
    assert delivery.response_excerpt == "é" * 200


def test_a_retry_due_beyond_the_queues_delay_hops(service: Service, receivers: Callable[..., Receiver]) -> None:
    receiver = receivers(script=[500], default=204)
    service.schedule = RetrySchedule((3600,))
    webhook = service.webhook(receiver.url)
    event = bill_created(service.clock)

    service.publish(event)
    # The retry is an hour (or up to 20% more) away: SQS delays it 15 minutes, and it hops until due
    hops = 0
    while service.retries.sent:
        sent = service.retries.sent.pop(0)
        assert sent.delay_seconds <= 900
        hops += 1
        service.clock.advance(seconds=sent.delay_seconds)
        service.handle(RetryMessage(retry=sent.ref, attempts=sent.attempts).model_dump_json())
    assert 4 <= hops <= 5
    assert len(receiver.requests) == 2
    delivery = service.delivery(webhook, event)
    assert delivery is not None and (delivery.state, delivery.attempts) == ("delivered", 2)


def test_a_redirect_is_not_followed_and_fails(service: Service, receivers: Callable[..., Receiver]) -> None:
    elsewhere = receivers()
    receiver = receivers(default=302, location=elsewhere.url)
    webhook = service.webhook(receiver.url)
    event = bill_created(service.clock)

    service.publish(event)

    assert len(receiver.requests) == 1
    assert elsewhere.requests == []
    delivery = service.delivery(webhook, event)
    assert delivery is not None
    assert (delivery.state, delivery.attempts, delivery.last_status_code) == ("pending", 1, 302)


def test_both_secrets_sign_during_a_rotation_and_only_the_new_one_after(
    service: Service, receivers: Callable[..., Receiver]
) -> None:
    receiver = receivers()
    old, new = _secret(), _secret()
    vault, clock = service.vault, service.clock
    webhook = Webhook(
        webhook_id="wh_1",
        user_id=USER,
        url=receiver.url,
        created_at=clock.now,
        secrets=(
            WebhookSecret(ciphertext=vault.encrypt(USER, "wh_1", {"secret": new}), created_at=clock.now),
            WebhookSecret(
                ciphertext=vault.encrypt(USER, "wh_1", {"secret": old}),
                created_at=clock.at(days=-1),
                expires_at=clock.at(seconds=60),
            ),
        ),
    )
    assert service.table.webhooks.create_webhook(webhook, limit=10)

    service.publish(bill_created(clock, 1))
    clock.advance(seconds=90)  # past the old secret's end, within the receivers' 5 minutes' tolerance
    service.publish(bill_created(clock, 2))

    during, after = receiver.requests
    assert len(during.headers["webhook-signature"].split(" ")) == 2
    standardwebhooks.Webhook(old).verify(during.body, during.headers)
    standardwebhooks.Webhook(new).verify(during.body, during.headers)
    assert len(after.headers["webhook-signature"].split(" ")) == 1
    standardwebhooks.Webhook(new).verify(after.body, after.headers)
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(old).verify(after.body, after.headers)


@pytest.mark.parametrize("address", ["10.0.0.1", "169.254.169.254", "::ffff:169.254.169.254"])
def test_a_host_that_now_resolves_to_a_private_address_is_refused_without_a_connection(
    service: Service, receivers: Callable[..., Receiver], address: str
) -> None:
    receiver = receivers()
    port = receiver.url.split(":")[2].split("/")[0]
    answers = {"now": ["127.0.0.1"]}
    looked_up: list[str] = []

    def resolve(host: str, port: int) -> list[str]:
        looked_up.append(host)
        return answers["now"]

    service.resolve = resolve
    webhook = service.webhook(f"http://localhost:{port}/hook")
    service.publish(bill_created(service.clock, 1))
    assert len(receiver.requests) == 1 and service.requests_made == 1

    # When the name resolves elsewhere, the next delivery is refused before any connection
    answers["now"] = [address]
    event = bill_created(service.clock, 2)
    service.publish(event)

    assert looked_up == ["localhost", "localhost"]
    assert len(receiver.requests) == 1 and service.requests_made == 1
    delivery = service.delivery(webhook, event)
    assert delivery is not None
    assert (delivery.state, delivery.attempts, delivery.last_status_code) == ("pending", 1, None)
    assert delivery.last_error is not None and delivery.last_error.startswith("refused: it points at")


def _certificate(host: str) -> tuple[bytes, bytes]:
    """A self-signed certificate for ``host`` and its key, PEM."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem


def test_an_https_delivery_reaches_the_checked_address_under_its_hosts_name(
    service: Service, receivers: Callable[..., Receiver], tmp_path: Path
) -> None:
    certificate, key = _certificate("hooks.example.test")
    (tmp_path / "cert.pem").write_bytes(certificate)
    (tmp_path / "key.pem").write_bytes(key)
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    named: list[str | None] = []
    server_tls.sni_callback = lambda connection, name, context: named.append(name)
    receiver = receivers(tls=server_tls)
    # The delivery's client, trusting the test's certificate instead of the public roots
    trusted = ssl.create_default_context(cadata=certificate.decode())
    trusted.verify_flags &= ~ssl.VERIFY_X509_STRICT
    service.client = lambda: httpx.AsyncClient(follow_redirects=False, verify=trusted, timeout=10)
    service.resolve = lambda host, port: ["127.0.0.1"]
    webhook = service.webhook(f"https://hooks.example.test:{receiver.port}/hook")
    impostor = service.webhook(f"https://other.example.test:{receiver.port}/hook", "wh_other")
    event = bill_created(service.clock)

    service.publish(event)

    # The request went to the address checked, naming the host in SNI and Host; the certificate was
    # checked against the host, so the other name on the same address was refused by TLS
    [request] = receiver.requests
    assert request.headers["host"] == f"hooks.example.test:{receiver.port}"
    assert "hooks.example.test" in named
    delivered = service.delivery(webhook, event)
    assert delivered is not None and delivered.state == "delivered"
    refused = service.delivery(impostor, event)
    assert refused is not None and refused.state == "pending" and refused.last_status_code is None
    assert refused.last_error is not None and refused.last_error.startswith("could not connect")


def test_in_aws_a_loopback_receiver_is_refused(service: Service, receivers: Callable[..., Receiver]) -> None:
    receiver = receivers()
    service.policy = UrlPolicy()
    webhook = service.webhook(receiver.url)
    event = bill_created(service.clock)

    service.publish(event)

    assert receiver.requests == [] and service.requests_made == 0
    delivery = service.delivery(webhook, event)
    assert delivery is not None and delivery.last_error is not None and "refused" in delivery.last_error


def test_only_subscribed_webhooks_receive_and_the_same_event_twice_is_one_delivery(
    service: Service, receivers: Callable[..., Receiver]
) -> None:
    subscribed, other = receivers(), receivers()
    service.webhook(subscribed.url, "wh_1", events=("bill.created",))
    service.webhook(other.url, "wh_2", events=("bill.overdue",))
    event = bill_created(service.clock)

    service.publish(event)
    service.publish(event)  # re-published, or the message received twice

    assert len(subscribed.requests) == 1
    assert other.requests == []


def test_an_event_redelivered_while_its_retry_waits_is_not_attempted_again(
    service: Service, receivers: Callable[..., Receiver]
) -> None:
    receiver = receivers(default=500)
    webhook = service.webhook(receiver.url)
    event = bill_created(service.clock)

    service.publish(event)
    service.publish(event)

    # One attempt; the retry is sent again (its first may not have gone), and the stale copy is dropped
    assert len(receiver.requests) == 1
    assert [sent.attempts for sent in service.retries.sent] == [1, 1]
    first, second = service.retries.sent
    service.retries.sent.clear()
    service.clock.advance(seconds=2)
    service.handle(RetryMessage(retry=first.ref, attempts=first.attempts).model_dump_json())
    service.handle(RetryMessage(retry=second.ref, attempts=second.attempts).model_dump_json())
    assert len(receiver.requests) == 2
    delivery = service.delivery(webhook, event)
    assert delivery is not None and delivery.attempts == 2


def test_three_days_of_failures_disable_the_webhook(service: Service, receivers: Callable[..., Receiver]) -> None:
    receiver = receivers(default=500)
    service.schedule = RetrySchedule((60,))
    webhook = service.webhook(receiver.url)
    started = service.clock.now

    # An event a day, every attempt failing
    for day in range(3):
        service.publish(bill_created(service.clock, day))
        service.clock.advance(days=1)
    stored = service.table.webhooks.get_webhook(USER, webhook.webhook_id)
    assert stored is not None and stored.failing_since == started and stored.disabled_at is None
    # A pending delivery from before
    service.retries.sent.clear()
    service.publish(bill_created(service.clock, 3))
    waiting = service.retries.sent.pop()

    stored = service.table.webhooks.get_webhook(USER, webhook.webhook_id)
    assert stored is not None
    assert stored.disabled_at == service.clock.now and stored.disabled_reason == DISABLED_REASON
    # A disabled webhook receives no new event, and its pending delivery fails without a request
    requests = len(receiver.requests)
    service.publish(bill_created(service.clock, 4))
    service.clock.advance(seconds=waiting.delay_seconds)
    service.handle(RetryMessage(retry=waiting.ref, attempts=waiting.attempts).model_dump_json())
    assert len(receiver.requests) == requests
    delivery = service.table.deliveries.get_delivery(waiting.ref)
    assert delivery is not None and delivery.state == "failed"
    assert delivery.last_error is not None and "disabled" in delivery.last_error


def test_a_success_clears_the_failing_since(service: Service, receivers: Callable[..., Receiver]) -> None:
    receiver = receivers(script=[500], default=204)
    webhook = service.webhook(receiver.url)

    service.publish(bill_created(service.clock))
    stored = service.table.webhooks.get_webhook(USER, webhook.webhook_id)
    assert stored is not None and stored.failing_since == service.clock.now
    service.run_retries()

    stored = service.table.webhooks.get_webhook(USER, webhook.webhook_id)
    assert stored is not None and stored.failing_since is None


def test_a_slow_receiver_does_not_delay_another(
    service: Service, receivers: Callable[..., Receiver], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(webhook_delivery, "ATTEMPT_SECONDS", 1.5)
    slow = receivers(hold=threading.Event())
    fast = receivers()
    slow_webhook = service.webhook(slow.url, "wh_slow")
    fast_webhook = service.webhook(fast.url, "wh_fast")
    event = bill_created(service.clock)

    began = time.monotonic()
    service.publish(event)
    took = time.monotonic() - began

    # The fast one was answered while the slow one still held its request; the slow one timed out
    assert fast.answered and not slow.answered
    assert took < 5
    fast_delivery = service.delivery(fast_webhook, event)
    slow_delivery = service.delivery(slow_webhook, event)
    assert fast_delivery is not None and fast_delivery.state == "delivered"
    assert slow_delivery is not None and slow_delivery.state == "pending"
    assert slow_delivery.last_error == "no answer within 1.5 s"


# ------------------------------------------------------------------ the handler


@pytest.mark.stack_parameters(WebhookAllowLoopback="true", WebhookRetryDelaysSeconds="1,1,1")
def test_the_handler_reports_only_records_whose_store_write_failed(
    load_handler: Callable[[str], ModuleType],
    stack: Stack,
    clock: Clock,
    receivers: Callable[..., Receiver],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    failing, working = receivers(default=500), receivers()
    service = Service(
        BillsTable(boto3.client("dynamodb"), stack.refs["BillsTable"]),
        webhook_vault(stack),
        clock,
    )
    service.webhook(failing.url, "wh_failing", events=("bill.created",))
    service.webhook(working.url, "wh_working", events=("bill.updated",))
    module = load_handler("DeliverWebhooksFunction")
    sqs = boto3.client("sqs")
    queue_url = stack.refs["DeliveryQueue"]
    queue_arn = stack.attributes["DeliveryQueue"]["Arn"]
    created, updated = bill_created(clock, 1), bill_created(clock, 2).model_copy(update={"type": "bill.updated"})
    store_down = bill_created(clock, 3).model_copy(update={"user_id": "u_store_down"})
    messages = [
        {"MessageId": "m-created", "ReceiptHandle": "r1", "Body": envelope(created)},
        {"MessageId": "m-updated", "ReceiptHandle": "r2", "Body": envelope(updated)},
        {"MessageId": "m-garbage", "ReceiptHandle": "r3", "Body": '{"hello": "world"}'},
        {"MessageId": "m-store-down", "ReceiptHandle": "r4", "Body": envelope(store_down)},
    ]
    real_list: Callable[[str], list[Webhook]] = module.store().webhooks.list_webhooks

    def list_webhooks(user_id: str) -> list[Webhook]:
        if user_id == "u_store_down":
            raise ConnectionError("the table could not be reached")
        return real_list(user_id)

    monkeypatch.setattr(module.store().webhooks, "list_webhooks", list_webhooks)

    answer = module.handler(sqs_event(messages, queue_arn), LambdaContext())

    # Only the record whose store call failed comes back; the receiver's 500 is the delivery's own retry
    assert answer == {"batchItemFailures": [{"itemIdentifier": "m-store-down"}]}
    assert len(failing.requests) == 1 and len(working.requests) == 1
    # The retry went on the delivery queue, delayed by the shortened schedule's first delay
    received = _receive_within(sqs, queue_url, seconds=5)
    [retry] = [RetryMessage.model_validate_json(message["Body"]) for message in received]
    assert (retry.retry.webhook_id, retry.attempts) == ("wh_failing", 1)
    # Handled once due, the retry is the second attempt
    clock.advance(seconds=3)
    answer = module.handler(sqs_event(received, queue_arn), LambdaContext())
    assert answer == {"batchItemFailures": []}
    assert len(failing.requests) == 2
