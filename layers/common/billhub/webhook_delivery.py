"""Delivering events to the users' webhooks: signed (Standard Webhooks), at least once, retried with
backoff, each attempt recorded on the delivery.

The delivery queue carries two kinds of message:

- an event, as the bus's rule delivers it (an EventBridge envelope whose ``detail`` is the ``Event``):
  it fans out to every webhook of the user that ``receives`` it, one ``Delivery`` per webhook and event
  (``delivery_id``), so an event published twice, or a message received twice, is delivered once;
- a retry, ``{"retry": <DeliveryRef>, "attempts": n}``, sent after a failed attempt with SQS's delay
  (at most 15 minutes: a longer wait is made of hops, each message re-sent with the time still left).

An attempt resolves the webhook's host again and refuses it unless every address is public
(``billhub.webhook_urls``), connects to the address it checked, follows no redirect, and waits at most
``ATTEMPT_SECONDS`` in all. Any 2xx is delivered; anything else is a failed attempt, retried after the
schedule's next delay (``RetrySchedule``) until the schedule is spent, then ``failed``. Only the first
``EXCERPT_CHARS`` characters of an answer are kept, of at most ``READ_LIMIT_BYTES`` read.

A webhook whose every attempt has failed for ``DISABLE_AFTER`` is disabled; its pending deliveries fail
at their next turn without a request.

What fails here is the delivery's own affair (it retries on its schedule); only a store or queue call
that failed raises, so the message is received again and nothing is lost.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol

import httpx
from aws_lambda_powertools import Logger
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from billhub.events import Event
from billhub.providers.http import tls_context
from billhub.threads import off_loop
from billhub.webhook_models import Delivery, DeliveryRef, Webhook
from billhub.webhook_urls import RefusedUrl, Resolver, UrlPolicy, check_url, pinned, public_addresses

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

    from billhub.store.protocols import DeliveryStore, WebhookStore

logger = Logger(child=True)

# A receiver has this long, connecting and answering included, for one attempt.
ATTEMPT_SECONDS = 10.0
# Of an answer, at most this much is read, and the start of it kept on the delivery.
READ_LIMIT_BYTES = 4096
EXCERPT_CHARS = 200
# A delivery and its log entry are kept this long after its last attempt.
DELIVERY_RETENTION = timedelta(days=30)
# A webhook whose every attempt failed for this long is disabled.
DISABLE_AFTER = timedelta(days=3)
DISABLED_REASON = "every delivery failed for 3 days"
# SQS delays a message at most 15 minutes.
MAX_QUEUE_DELAY_SECONDS = 900
# Each retry comes after its delay times a factor drawn from [1, 1 + RETRY_JITTER]: the jitter only
# lengthens the wait, so the schedule's retries span at least the sum of its delays.
RETRY_JITTER = 0.2
USER_AGENT = "billhub-webhooks/1"


class WebhookSecrets(Protocol):
    """The vault that holds the webhooks' signing secrets (purpose "webhook-secret", context: the user
    and the webhook); what it decrypts is ``{"secret": "whsec_..."}``."""

    def decrypt(self, user_id: str, account_id: str, ciphertext: bytes) -> dict[str, Any]: ...


class RetrySender(Protocol):
    def send(self, ref: DeliveryRef, attempts: int, delay_seconds: int) -> None: ...


@dataclass(frozen=True)
class RetrySchedule:
    """Seconds before each retry: after attempt n failed, the n-th delay (jittered); after the last, none."""

    delays: tuple[int, ...]
    jitter: float = RETRY_JITTER

    def __post_init__(self) -> None:
        if not self.delays or any(delay <= 0 for delay in self.delays):
            raise ValueError("a retry schedule is one or more positive delays")

    def next_attempt_at(self, attempts: int, now: datetime, rng: random.Random) -> datetime | None:
        """When to try again after ``attempts`` attempts failed; None when the schedule is spent."""
        if attempts < 1 or attempts > len(self.delays):
            return None
        seconds = self.delays[attempts - 1] * rng.uniform(1.0, 1.0 + self.jitter)
        return now + timedelta(seconds=seconds)


class QueueRetries:
    """``RetrySender`` over the delivery queue."""

    def __init__(self, sqs: SQSClient, queue_url: str) -> None:
        self._sqs = sqs
        self._url = queue_url

    def send(self, ref: DeliveryRef, attempts: int, delay_seconds: int) -> None:
        body = RetryMessage(retry=ref, attempts=attempts).model_dump_json()
        self._sqs.send_message(QueueUrl=self._url, MessageBody=body, DelaySeconds=delay_seconds)


class EventMessage(BaseModel):
    """An event as the bus's rule puts it on the queue (EventBridge's envelope; only these fields are read)."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    source: Literal["billhub"]
    detail_type: str = Field(alias="detail-type")
    detail: Event


class RetryMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    retry: DeliveryRef
    # The attempts the delivery had when this retry was sent: a retry of a delivery that has had more
    # since (a duplicate message) is dropped, so duplicates never become parallel chains of retries.
    attempts: int | None = Field(default=None, ge=0)


def parse_message(body: str) -> EventMessage | RetryMessage | None:
    """The message a queue record carries; None (logged) for anything else."""
    for kind in (RetryMessage, EventMessage):
        try:
            return kind.model_validate_json(body)
        except ValidationError:
            continue
    return None


@dataclass(frozen=True)
class Outcome:
    delivered: bool
    status_code: int | None = None
    error: str | None = None
    excerpt: str | None = None


def delivery_client() -> httpx.AsyncClient:
    """The client attempts go through: no redirects, the shared TLS settings, and no connection kept
    (each attempt connects to the address it just checked, its own host in SNI; a pooled connection
    made for another webhook's host on the same address must never carry it)."""
    return httpx.AsyncClient(
        follow_redirects=False,
        verify=tls_context(),
        timeout=httpx.Timeout(ATTEMPT_SECONDS),
        limits=httpx.Limits(max_keepalive_connections=0),
        trust_env=False,
    )


def signature_header(secrets: Sequence[str], msg_id: str, timestamp: datetime, body: str) -> str:
    """``webhook-signature``: every signing secret's signature, space-separated (Standard Webhooks)."""
    # Imported here: only the delivery signs, and the layer's other users need not load it.
    import standardwebhooks

    return " ".join(standardwebhooks.Webhook(secret).sign(msg_id, timestamp, body) for secret in secrets)


class WebhookDeliverer:
    def __init__(
        self,
        webhooks: WebhookStore,
        deliveries: DeliveryStore,
        secrets: WebhookSecrets,
        retries: RetrySender,
        client: httpx.AsyncClient,
        policy: UrlPolicy,
        schedule: RetrySchedule,
        clock: Callable[[], datetime],
        resolve: Resolver | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._webhooks = webhooks
        self._deliveries = deliveries
        self._secrets = secrets
        self._retries = retries
        self._client = client
        self._policy = policy
        self._schedule = schedule
        self._clock = clock
        self._resolve = resolve
        self._random = rng or random.Random()  # jitter, not secrecy
        self._list_webhooks = off_loop(webhooks.list_webhooks)
        self._get_webhook = off_loop(webhooks.get_webhook)
        self._record_health = off_loop(webhooks.record_webhook_health)
        self._start = off_loop(deliveries.start_delivery)
        self._get_delivery = off_loop(deliveries.get_delivery)
        self._record_attempt = off_loop(deliveries.record_attempt)
        self._send_retry = off_loop(retries.send)
        self._decrypt = off_loop(secrets.decrypt)

    async def handle(self, body: str) -> None:
        """Handles one queue message; raises only when a store or queue call failed (receive it again)."""
        message = parse_message(body)
        if message is None:
            logger.warning("Dropped a delivery queue message that is neither an event nor a retry")
            return
        if isinstance(message, RetryMessage):
            await self.retry(message.retry, message.attempts)
        else:
            await self.fan_out(message.detail)

    async def fan_out(self, event: Event) -> None:
        """Delivers ``event`` to every webhook of its user that receives it, all at once."""
        webhooks = [webhook for webhook in await self._list_webhooks(event.user_id) if webhook.receives(event)]
        results = await asyncio.gather(
            *(self._deliver_new(webhook, event) for webhook in webhooks), return_exceptions=True
        )
        failures = [result for result in results if isinstance(result, BaseException)]
        if failures:
            # Every other webhook's delivery went ahead; the message comes back for the failed ones.
            raise failures[0]

    async def retry(self, ref: DeliveryRef, attempts: int | None = None) -> None:
        delivery = await self._get_delivery(ref)
        if delivery is None or delivery.state != "pending":
            return
        if attempts is not None and attempts != delivery.attempts:
            return  # a duplicate of a retry another attempt already took
        webhook = await self._get_webhook(ref.user_id, ref.webhook_id)
        if webhook is None:
            return  # the webhook was deleted
        if not self._due(delivery):
            await self._schedule_retry(delivery)  # a hop of a wait longer than the queue delays
            return
        await self.attempt(webhook, delivery)

    async def _deliver_new(self, webhook: Webhook, event: Event) -> None:
        now = self._clock()
        delivery = Delivery(webhook_id=webhook.webhook_id, event=event, created_at=now)
        if not await self._start(delivery, now + DELIVERY_RETENTION):
            existing = await self._get_delivery(delivery.ref)
            if existing is None or existing.state != "pending":
                return
            if not self._due(existing):
                # A redelivered message: its retry may never have been sent (the record failed after).
                await self._schedule_retry(existing)
                return
            delivery = existing
        await self.attempt(webhook, delivery)

    def _due(self, delivery: Delivery) -> bool:
        return delivery.next_attempt_at is None or delivery.next_attempt_at <= self._clock()

    async def attempt(self, webhook: Webhook, delivery: Delivery) -> None:
        """One attempt of ``delivery`` (pending), recorded; then the webhook's health and the next retry."""
        if webhook.disabled_at is not None:
            after = delivery.model_copy(
                update={
                    "state": "failed",
                    "next_attempt_at": None,
                    "last_status_code": None,
                    "response_excerpt": None,
                    "last_error": f"the webhook was disabled: {webhook.disabled_reason or 'disabled'}",
                }
            )
            await self._record_attempt(delivery, after, self._clock() + DELIVERY_RETENTION)
            return
        outcome = await self._post(webhook, delivery)
        now = self._clock()
        attempts = delivery.attempts + 1
        if outcome.delivered:
            next_attempt_at = None
            state: Literal["pending", "delivered", "failed"] = "delivered"
        else:
            next_attempt_at = self._schedule.next_attempt_at(attempts, now, self._random)
            state = "pending" if next_attempt_at is not None else "failed"
        after = delivery.model_copy(
            update={
                "state": state,
                "attempts": attempts,
                "last_status_code": outcome.status_code,
                "last_error": outcome.error,
                "response_excerpt": outcome.excerpt,
                "next_attempt_at": next_attempt_at,
            }
        )
        if not await self._record_attempt(delivery, after, now + DELIVERY_RETENTION):
            return  # another attempt was recorded first: its outcome stands
        logger.info(
            "Webhook delivery attempted",
            delivery_id=delivery.delivery_id,
            webhook_id=webhook.webhook_id,
            attempts=attempts,
            state=state,
            status_code=outcome.status_code,
            error=outcome.error,
        )
        await self._note_health(webhook, outcome.delivered, now)
        if state == "pending":
            await self._schedule_retry(after)

    async def _schedule_retry(self, delivery: Delivery) -> None:
        due = delivery.next_attempt_at or self._clock()
        wait = math.ceil((due - self._clock()).total_seconds())
        await self._send_retry(delivery.ref, delivery.attempts, max(0, min(MAX_QUEUE_DELAY_SECONDS, wait)))

    async def _note_health(self, webhook: Webhook, delivered: bool, now: datetime) -> None:
        if delivered:
            if webhook.failing_since is not None:
                await self._record_health(webhook, None, None, None)
            return
        failing_since = webhook.failing_since or now
        if now - failing_since >= DISABLE_AFTER:
            await self._record_health(webhook, failing_since, now, DISABLED_REASON)
        elif webhook.failing_since is None:
            await self._record_health(webhook, failing_since, None, None)

    async def _post(self, webhook: Webhook, delivery: Delivery) -> Outcome:
        event = delivery.event
        try:
            url = check_url(webhook.url, self._policy)
            addresses = await asyncio.to_thread(public_addresses, url, self._policy, self._resolve)
        except RefusedUrl as refused:
            return Outcome(delivered=False, error=f"refused: {(refused.details or {}).get('reason', refused)}")
        now = self._clock()
        # Serialised once: these exact characters are signed and sent.
        body = json.dumps(event.payload(), separators=(",", ":"))
        timestamp = datetime.fromtimestamp(math.floor(now.timestamp()), UTC)
        signing = webhook.signing_secrets(now)
        if not signing:
            return Outcome(delivered=False, error="the webhook has no signing secret")
        secrets = [
            (await self._decrypt(webhook.user_id, webhook.webhook_id, secret.ciphertext))["secret"]
            for secret in signing
        ]
        target, host, extensions = pinned(url, addresses[0])
        headers = {
            **host,
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webhook-id": event.event_id,
            "webhook-timestamp": str(int(timestamp.timestamp())),
            "webhook-signature": signature_header(secrets, event.event_id, timestamp, body),
        }
        try:
            async with asyncio.timeout(ATTEMPT_SECONDS):
                return await self._send(target, headers, extensions, body)
        except (TimeoutError, httpx.TimeoutException):
            return Outcome(delivered=False, error=f"no answer within {ATTEMPT_SECONDS:g} s")
        except httpx.HTTPError as error:
            return Outcome(delivered=False, error=f"could not connect: {type(error).__name__}")

    async def _send(self, target: str, headers: dict[str, str], extensions: dict[str, Any], body: str) -> Outcome:
        request = self._client.build_request(
            "POST", target, headers=headers, content=body.encode(), extensions=extensions
        )
        response = await self._client.send(request, stream=True, follow_redirects=False)
        try:
            read = bytearray()
            async for chunk in response.aiter_raw():
                read += chunk
                if len(read) >= READ_LIMIT_BYTES:
                    break
        finally:
            await response.aclose()
        excerpt = bytes(read[:READ_LIMIT_BYTES]).decode("utf-8", errors="replace")[:EXCERPT_CHARS] or None
        status = response.status_code
        if 200 <= status < 300:
            return Outcome(delivered=True, status_code=status, excerpt=excerpt)
        return Outcome(delivered=False, status_code=status, error=f"answered {status}", excerpt=excerpt)
