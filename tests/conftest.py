"""Shared fixtures: AWS in-process (moto) provisioned from template.yaml, the mock provider over real
HTTP, and each function's real handler loaded with the environment the template gives it."""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import botocore.client
import pytest
import snapshot_restore_py
from botocore.exceptions import ClientError
from moto import mock_aws
from moto.core.botocore_stubber import BotocoreStubber
from werkzeug.serving import make_server

import billhub.runtime
from localcloud import dynamodb_rules
from localcloud.provision import Stack, provision
from localcloud.template import ROOT, function_specs, load_template
from mock_provider.app import create_app
from mock_provider.control import Control
from mock_provider.registry import service_parameters

REGION = "us-east-1"
# Where the test stack's API is public: another host than the events' requestContext.domainName, under a
# base path, as behind a custom domain's API mapping (the OAuth2 redirect URIs are under it).
PUBLIC_BASE_URL = "https://bills.example.test/api"


@pytest.fixture(autouse=True)
def _fake_aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    # Never reach a real account from a test, whatever the developer's shell has set.
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "billhub-tests")


@pytest.fixture(autouse=True)
def _snapstart_hooks_of_this_test_only() -> Iterator[None]:
    """SnapStart hooks register in a process-wide list as a handler is imported; a test sees only those of
    the handlers it loads itself (one Lambda execution environment runs one function)."""
    registries = (snapshot_restore_py.get_before_snapshot(), snapshot_restore_py.get_after_restore())
    for registry in registries:
        registry.clear()
    yield
    for registry in registries:
        registry.clear()


_make_api_call = botocore.client.BaseClient._make_api_call  # type: ignore[attr-defined]


@pytest.fixture(autouse=True)
def _dynamodb_rules_moto_does_not_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """Real DynamoDB refuses requests moto accepts (an unused placeholder, a batch or transaction too big,
    a number too precise): every DynamoDB request a test makes meets the local cloud's checks of them."""

    def checked(client: Any, operation: str, params: dict[str, Any]) -> Any:
        if client.meta.service_model.service_name == "dynamodb":
            try:
                dynamodb_rules.check(operation, params)
            except dynamodb_rules.RequestRefused as refused:
                raise ClientError(
                    {"Error": {"Code": "ValidationException", "Message": str(refused)}}, operation
                ) from None
        return _make_api_call(client, operation, params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", checked)


class Clock:
    """A test's one "now": the handlers' ``utc_now`` and the sandbox's today both read it, so the
    service and the provider never disagree on the date. It stands still unless the test moves it."""

    def __init__(self, start: datetime) -> None:
        self.start = self.now = start

    def __call__(self) -> datetime:
        return self.now

    def today(self) -> date:
        return self.now.date()

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)

    def at(self, **delta: float) -> datetime:
        return self.start + timedelta(**delta)

    def start_on_day_of_month(self, day: int) -> None:
        """Moves the start to ``day`` of the current month (its year and month still the run's): for a test
        that needs the month's bill still open, as it is before the 22nd."""
        self.start = self.now = self.start.replace(day=day)


@pytest.fixture
def clock(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Clock:
    """The wall clock at the test's start (whatever date the suite runs at, libfaketime's included),
    or the instant a test names: ``@pytest.mark.clock("2028-02-29T23:59:00+00:00")`` or an indirect
    parameter. Handlers loaded after it read it as ``utc_now``."""
    marker = request.node.get_closest_marker("clock")
    named = getattr(request, "param", None) or (marker.args[0] if marker else None)
    start = datetime.fromisoformat(named) if named else datetime.now(UTC).replace(microsecond=0)
    test_clock = Clock(start.astimezone(UTC))
    monkeypatch.setattr(billhub.runtime, "utc_now", test_clock)
    return test_clock


@pytest.fixture(scope="session")
def template() -> dict[str, Any]:
    return load_template()


@pytest.fixture
def mock_provider(clock: Clock) -> Iterator[tuple[str, Control]]:
    """The sandbox provider server on a free loopback port, its date read from the test's clock."""
    control = Control()
    server = make_server("127.0.0.1", 0, create_app(today=clock.today, control=control), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", control
    server.shutdown()
    thread.join()


def _moto_client(service: str) -> Any:
    return boto3.client(service, region_name=REGION)  # type: ignore[call-overload]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "clock(instant): the ISO 8601 instant the test's clock starts at")
    config.addinivalue_line(
        "markers", "stack_parameters(**parameters): template parameters for the test's stack, over the defaults"
    )


@pytest.fixture
def stack(
    template: dict[str, Any],
    mock_provider: tuple[str, Control],
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Stack]:
    """Every resource of template.yaml, created in moto (in process) as the local cloud creates it.

    In-process moto is not thread-safe (concurrent writes can fail or be lost inside it, which AWS
    never does), and fetches run their AWS calls in worker threads: calls reach moto one at a time,
    as the local cloud's moto server takes DynamoDB requests."""
    answer_one_call_at_a_time = threading.RLock()
    stub = BotocoreStubber.__call__

    def serialised(self: BotocoreStubber, *args: Any, **kwargs: Any) -> Any:
        with answer_one_call_at_a_time:
            return stub(self, *args, **kwargs)

    monkeypatch.setattr(BotocoreStubber, "__call__", serialised)
    parameters = {
        **service_parameters(mock_provider[0], public_base_url=PUBLIC_BASE_URL),
        "FetchMaxReceiveCount": "3",
        # Tests refresh one user several times within a second; the throttle's own tests turn it on.
        "ManualRefreshMinIntervalSeconds": "0",
    }
    marker = request.node.get_closest_marker("stack_parameters")
    if marker is not None:
        parameters.update(marker.kwargs)
    with mock_aws():
        yield provision(template, _moto_client, REGION, "billhub-test", parameters)


@pytest.fixture
def load_handler(
    template: dict[str, Any], stack: Stack, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> Callable[[str], ModuleType]:
    """Imports a function's ``app`` module fresh, with that function's environment from the template.

    The layer is imported once for the whole process, so what it caches for the HTTP handlers (the table
    their routes are given, ``billhub.api.bills_table``) is emptied at each load, as in a new environment;
    the handlers a test loads together share it from their first request on."""
    specs = {spec.logical_id: spec for spec in function_specs(template)}
    layer = str(ROOT / "layers" / "common")
    if layer not in sys.path:
        sys.path.insert(0, layer)

    def load(logical_id: str) -> ModuleType:
        from billhub.api import bills_table

        bills_table.cache_clear()
        spec = specs[logical_id]
        for name, value in stack.resolve(spec.environment).items():
            monkeypatch.setenv(name, str(value))
        module_spec = importlib.util.spec_from_file_location(
            f"handler_{logical_id}", spec.code_dir / f"{spec.module}.py"
        )
        assert module_spec is not None and module_spec.loader is not None
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        return module

    return load


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).parts[-2] == "e2e":
            item.add_marker(pytest.mark.e2e)


os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
