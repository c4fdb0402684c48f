"""The delivery benchmark's receiver: what it counts and which signatures it refuses."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import httpx
import pytest
import standardwebhooks

from bench import webhook_delivery
from bench.webhook_delivery import Arrival, Receiver

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()


def post(base: str, path: str, msg_id: str, body: str, secret: str) -> int:
    now = datetime.now(UTC).replace(microsecond=0)
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": standardwebhooks.Webhook(secret).sign(msg_id, now, body),
        "content-type": "application/json",
    }
    return httpx.post(f"{base}{path}", content=body, headers=headers).status_code


def test_the_receiver_answers_204_counts_every_request_and_verifies_a_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    receiver = Receiver(secrets={"/hooks/0": SECRET})
    server = receiver.serve()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    # Given every request sampled, one signed with the webhook's secret and one with another
    monkeypatch.setattr(webhook_delivery, "SIGNATURE_SAMPLE", 1)
    try:
        other = "whsec_" + base64.b64encode(b"o" * 32).decode()
        assert post(base, "/hooks/0", "msg_" + "a" * 32, '{"type":"bill.created"}', SECRET) == 204
        assert post(base, "/hooks/0", "msg_" + "b" * 32, '{"type":"bill.updated"}', other) == 204
    finally:
        server.shutdown()
        server.server_close()
    # Then both are counted by type, one verified, the other kept as a bad signature
    assert [(a.event_id[-1], a.type) for a in receiver.arrivals] == [("a", "bill.created"), ("b", "bill.updated")]
    assert receiver.verified == 1
    assert len(receiver.bad_signatures) == 1


def test_an_event_is_a_duplicate_only_when_the_same_webhook_received_it_twice() -> None:
    arrivals = [
        Arrival("/hooks/0", "msg_1", "bill.created", 1.0),
        Arrival("/hooks/1", "msg_1", "bill.created", 1.1),
        Arrival("/hooks/0", "msg_1", "bill.created", 2.0),
    ]
    assert webhook_delivery._duplicates(arrivals) == [("/hooks/0", "msg_1")]
