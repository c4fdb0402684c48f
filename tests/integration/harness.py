"""Drives the handlers as API Gateway and the SQS event source mapping would, for the integration tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import boto3
import httpx
import pydantic

from billhub.models import FetchRequest
from localcloud.provision import Stack
from localcloud.template import load_template, queues_bound_to
from tests.events import http_event, response_json, sqs_event

API_KEY = "cw_sandbox_integration"


class LambdaContext:
    function_name = "test"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:test"
    aws_request_id = "req-1"

    def get_remaining_time_in_millis(self) -> int:
        return 10_000


class Api:
    """Calls handlers as API Gateway would, with the authorizer's verdict in the request context."""

    def __init__(self, load: Callable[[str], ModuleType], stack: Stack) -> None:
        self.stack = stack
        self.auth = load("AuthFunction")
        self.authorizer = load("AuthorizerFunction")
        self.link = load("LinkAccountFunction")
        self.bills = load("GetBillsFunction")
        self.insights = load("InsightsFunction")
        self.refresh = load("RefreshFunction")
        self.planner = load("PlannerFunction")
        self.fetch = load("FetchProviderFunction")
        self.delete = load("DeleteAccountFunction")
        self.webhooks = load("WebhooksFunction")

    def call(self, module: ModuleType, method: str, path: str, **kwargs: Any) -> tuple[int, Any, dict[str, str]]:
        response = module.handler(http_event(method, path, **kwargs), LambdaContext())
        return response["statusCode"], response_json(response), response.get("headers", {})

    def route(
        self, module: ModuleType, method: str, route: str, path_parameters: dict[str, str], **kwargs: Any
    ) -> tuple[int, Any, dict[str, str]]:
        """Calls a route with path parameters, e.g. ``route(link, "GET", "/bills/{provider}", {"provider": "x"})``."""
        path = route.format(**path_parameters)
        return self.call(module, method, path, route=route, path_parameters=path_parameters, **kwargs)

    def user(self, email: str = "ada@example.com") -> str:
        status, body, _ = self.call(self.auth, "POST", "/auth/register", body={"email": email, "password": "pw-" * 4})
        assert status == 201
        return str(body["user_id"])

    def link_provider(self, user_id: str, provider: str, credentials: dict[str, str]) -> tuple[int, Any]:
        status, body, _ = self.call(
            self.link,
            "POST",
            "/accounts/link",
            user_id=user_id,
            body={"provider": provider, "credentials": credentials},
        )
        self._take_first_fetch(status, body)
        return status, body

    def _take_first_fetch(self, status: int, body: Any) -> None:
        """A link (or repair) enqueues the account's first fetch. Tests using these helpers run fetches
        when they choose (``refresh_all``, ``deliver``), so the helpers take that one request off the
        queue, checking it is there; ``test_planner_and_throttle`` tests the first fetch itself."""
        if status not in (200, 201):
            return
        taken = self.take_fetch_requests(
            lambda request: request.account_id == body["account_id"] and request.reason == "link"
        )
        assert len(taken) == 1, taken

    def take_fetch_requests(self, wanted: Callable[[FetchRequest], bool] = lambda _: True) -> list[FetchRequest]:
        """Takes the wanted fetch requests off every fetch lane (as a fetcher that succeeded would);
        leaves the others there, visible."""
        sqs = boto3.client("sqs")
        taken: list[FetchRequest] = []
        others: list[dict[str, Any]] = []
        while messages := receive_all(self.stack):
            for message in messages:
                try:
                    request: FetchRequest | None = FetchRequest.model_validate_json(message["Body"])
                except pydantic.ValidationError:
                    request = None
                if request is not None and wanted(request):
                    taken.append(request)
                    sqs.delete_message(QueueUrl=message[LANE_URL], ReceiptHandle=message["ReceiptHandle"])
                else:
                    others.append(message)
        for message in others:
            sqs.change_message_visibility(
                QueueUrl=message[LANE_URL], ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
            )
        return taken

    def link_clearwater(self, user_id: str, api_key: str = API_KEY) -> tuple[int, Any]:
        return self.link_provider(user_id, "clearwater", {"api_key": api_key})

    def oauth_start(self, user_id: str, provider: str, account_id: str | None = None) -> tuple[int, Any]:
        status, body, _ = self.route(
            self.link,
            "GET",
            "/accounts/oauth/{provider}/start",
            {"provider": provider},
            query={"account_id": account_id} if account_id else None,
            user_id=user_id,
        )
        return status, body

    def oauth_consent(self, user_id: str, provider: str, login: str, account_id: str | None = None) -> dict[str, str]:
        """Starts the OAuth2 flow and lets the sandbox's authorize page answer ``login``: the callback's query."""
        status, start = self.oauth_start(user_id, provider, account_id)
        assert status == 200, start
        return self.consent(start["authorize_url"], login)

    @staticmethod
    def consent(authorize_url: str, login: str) -> dict[str, str]:
        """The sandbox's authorize page answering ``login``: the callback's query."""
        # httpx's ``params`` would replace the authorize URL's query, so the hint is appended to it.
        consent = httpx.get(f"{authorize_url}&{urlencode({'login_hint': login})}", follow_redirects=False)
        assert consent.status_code == 302, consent.text
        return dict(parse_qsl(urlsplit(consent.headers["Location"]).query))

    def oauth_callback(self, provider: str, query: dict[str, str]) -> tuple[int, Any]:
        """The browser arriving back from the provider: no access token, only the query."""
        status, body, _ = self.route(
            self.link, "GET", "/accounts/oauth/{provider}/callback", {"provider": provider}, query=query
        )
        self._take_first_fetch(status, body)
        return status, body

    def put_credentials(self, user_id: str, account_id: str, credentials: dict[str, str]) -> tuple[int, Any]:
        status, body, _ = self.route(
            self.link,
            "PUT",
            "/accounts/{account_id}/credentials",
            {"account_id": account_id},
            user_id=user_id,
            body={"credentials": credentials},
        )
        self._take_first_fetch(status, body)
        return status, body

    def oauth_link(self, user_id: str, provider: str, login: str, account_id: str | None = None) -> tuple[int, Any]:
        return self.oauth_callback(provider, self.oauth_consent(user_id, provider, login, account_id))

    def accounts(self, user_id: str) -> list[dict[str, Any]]:
        status, body, _ = self.call(self.link, "GET", "/accounts", user_id=user_id)
        assert status == 200
        return list(body["accounts"])

    def bills_of(self, user_id: str, provider: str) -> dict[str, Any]:
        status, body, _ = self.route(self.bills, "GET", "/bills/{provider}", {"provider": provider}, user_id=user_id)
        assert status == 200, body
        return dict(body)

    def delete_account(self, user_id: str, account_id: str) -> tuple[int, Any]:
        status, body, _ = self.route(
            self.delete, "DELETE", "/accounts/{account_id}", {"account_id": account_id}, user_id=user_id
        )
        return status, body

    def delete_me(self, user_id: str, password: str = "pw-" * 4) -> tuple[int, Any]:
        """``DELETE /me`` with the password typed again (``user`` registers everyone with ``"pw-" * 4``)."""
        status, body, _ = self.call(self.auth, "DELETE", "/me", user_id=user_id, body={"password": password})
        return status, body

    def refresh_all(self, user_id: str) -> dict[str, Any]:
        """``POST /bills/refresh``, then one delivery of every queued message to the fetcher."""
        status, body, _ = self.call(self.refresh, "POST", "/bills/refresh", user_id=user_id)
        assert status == 202, body
        return self.deliver()

    def deliver(self) -> dict[str, Any]:
        messages = receive_all(self.stack)
        result: dict[str, Any] = self.fetch.handler(
            sqs_event(messages, self.stack.attributes["FetchQueue"]["Arn"]), LambdaContext()
        )
        return result

    def deliver_until_settled(self, within_seconds: float = 15) -> None:
        """Delivers queued fetches, and the ones deferred meanwhile (sent back delayed, when a provider's
        budget was spent on a loaded machine), until none is queued or delayed; fails after
        ``within_seconds``. Each round's partial failures must be none."""
        deadline = time.monotonic() + within_seconds
        while True:
            assert self.deliver() == {"batchItemFailures": []}
            counts = fetch_lane_counts(self.stack, "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesDelayed")
            if not any(counts.values()):
                return
            while counts["ApproximateNumberOfMessages"] == 0:  # a deferred fetch's delay runs out
                assert time.monotonic() < deadline, f"fetches still queued after {within_seconds} s: {counts}"
                time.sleep(0.1)
                counts = fetch_lane_counts(self.stack, "ApproximateNumberOfMessages")


def user_items(stack: Stack) -> list[dict[str, Any]]:
    """Every item holding users' data (profiles, emails, accounts, links, bills, jobs), leaving out the
    service's own bookkeeping (request budgets, circuits, alerts)."""
    return [item for item in raw_items(stack) if item["PK"]["S"].startswith(("USER#", "EMAIL#"))]


def raw_items(stack: Stack) -> list[dict[str, Any]]:
    return boto3.client("dynamodb").scan(TableName=stack.refs["BillsTable"])["Items"]


# The fetch lanes: every queue the template binds to the fetcher (FetchQueue, then each provider's).
FETCH_LANES = tuple(queues_bound_to(load_template(), "FetchProviderFunction"))
# The key ``receive_all`` adds to each message: the URL of the lane it came from.
LANE_URL = "QueueUrl"


def receive_all(stack: Stack) -> list[dict[str, Any]]:
    """Up to 10 messages of each fetch lane, each with the ``LANE_URL`` it came from."""
    sqs = boto3.client("sqs")
    messages: list[dict[str, Any]] = []
    for lane in FETCH_LANES:
        url = stack.refs[lane]
        response = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, MessageSystemAttributeNames=["All"])
        messages.extend({**message, LANE_URL: url} for message in response.get("Messages", []))
    return messages


def fetch_lane_counts(stack: Stack, *attributes: str) -> dict[str, int]:
    """Each of the queue ``attributes`` (``ApproximateNumberOfMessages``, ...), summed over the fetch lanes."""
    sqs: Any = boto3.client("sqs")  # the attributes' names are any of SQS's, not the stubs' literals
    totals = dict.fromkeys(attributes, 0)
    for lane in FETCH_LANES:
        counts = sqs.get_queue_attributes(QueueUrl=stack.refs[lane], AttributeNames=list(attributes))["Attributes"]
        for name in attributes:
            totals[name] += int(counts[name])
    return totals


WRITES = frozenset({"PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems", "BatchWriteItem"})


class ReadsBeforeWrites:
    """Runs calls in threads, each doing all its reads before any of them writes, then lets them write
    one call at a time in the order given: the interleaving that defeats a read-then-write check.

    It holds each thread at its first DynamoDB write through the ``before-call`` hook of ``clients``,
    which must be the DynamoDB clients the code under test uses.
    """

    def __init__(self, clients: Sequence[Any], calls: Sequence[Callable[[], Any]], timeout: float = 10) -> None:
        self._calls = calls
        self._timeout = timeout
        self._all_read = threading.Barrier(len(calls))
        self._turns = [threading.Event() for _ in calls]
        self._thread = threading.local()
        for client in clients:
            client.meta.events.register("before-call.dynamodb", self._before_call)

    def _arrive(self) -> None:
        if not getattr(self._thread, "arrived", False):
            self._thread.arrived = True
            self._all_read.wait(self._timeout)
            assert self._turns[self._thread.index].wait(self._timeout), "an earlier call never finished"

    def _before_call(self, model: Any, **_: Any) -> None:
        if hasattr(self._thread, "index") and model.name in WRITES:
            self._arrive()

    def run(self) -> list[Any]:
        """The calls' results, in order; the first exception a call raised, if any."""
        results: list[Any] = [None] * len(self._calls)
        errors: list[BaseException] = []

        def work(index: int) -> None:
            self._thread.index = index
            try:
                results[index] = self._calls[index]()
            except BaseException as error:
                errors.append(error)
            finally:
                try:
                    self._arrive()  # a call that wrote nothing still takes part
                finally:
                    if index + 1 < len(self._calls):
                        self._turns[index + 1].set()

        self._turns[0].set()
        threads = [threading.Thread(target=work, args=(index,)) for index in range(len(self._calls))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(self._timeout * 2)
        if errors:
            raise errors[0]
        return results


@contextmanager
def dynamodb_requests(client: Any) -> Iterator[list[tuple[str, dict[str, Any]]]]:
    """Records the DynamoDB requests ``client`` sends: (operation, parameters) in order."""
    seen: list[tuple[str, dict[str, Any]]] = []

    def record(model: Any, params: dict[str, Any], **_: Any) -> None:
        seen.append((model.name, params))

    client.meta.events.register("before-parameter-build.dynamodb", record)
    try:
        yield seen
    finally:
        client.meta.events.unregister("before-parameter-build.dynamodb", record)
