"""Shared fixtures: AWS in-process (moto) provisioned from template.yaml, the mock provider over real
HTTP, and each function's real handler loaded with the environment the template gives it."""

from __future__ import annotations

import importlib.util
import os
import re
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import botocore.client
import pytest
from moto import mock_aws
from moto.core.botocore_stubber import BotocoreStubber
from werkzeug.serving import make_server

from localcloud.provision import Stack, provision
from localcloud.template import ROOT, function_specs, load_template
from mock_provider.app import create_app
from mock_provider.control import Control

REGION = "us-east-1"
SANDBOX_TODAY = date(2026, 11, 15)


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


_EXPRESSIONS = ("KeyConditionExpression", "FilterExpression", "ConditionExpression", "UpdateExpression")
_make_api_call = botocore.client.BaseClient._make_api_call  # type: ignore[attr-defined]


def _unused_placeholders(request: dict[str, Any]) -> list[str]:
    expressions = " ".join(str(request.get(name, "")) for name in (*_EXPRESSIONS, "ProjectionExpression"))
    placeholders = [*request.get("ExpressionAttributeValues", {}), *request.get("ExpressionAttributeNames", {})]
    return [name for name in placeholders if not re.search(re.escape(name) + r"(?![A-Za-z0-9_])", expressions)]


@pytest.fixture(autouse=True)
def _refuse_unused_expression_placeholders(monkeypatch: pytest.MonkeyPatch) -> None:
    """Real DynamoDB refuses a request naming a placeholder its expressions do not use; moto accepts it,
    so every DynamoDB request a test makes is checked here."""

    def checked(client: Any, operation: str, params: dict[str, Any]) -> Any:
        if client.meta.service_model.service_name == "dynamodb":
            requests = [params, *(body for item in params.get("TransactItems", []) for body in item.values())]
            for request in requests:
                unused = _unused_placeholders(request)
                assert not unused, f"{operation} names placeholders its expressions never use: {unused}"
        return _make_api_call(client, operation, params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", checked)


@pytest.fixture(scope="session")
def template() -> dict[str, Any]:
    return load_template()


@pytest.fixture
def mock_provider() -> Iterator[tuple[str, Control]]:
    """The sandbox provider server on a free loopback port, with its date pinned."""
    control = Control()
    server = make_server("127.0.0.1", 0, create_app(today=SANDBOX_TODAY, control=control), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", control
    server.shutdown()
    thread.join()


def _moto_client(service: str) -> Any:
    return boto3.client(service, region_name=REGION)  # type: ignore[call-overload]


def pytest_configure(config: pytest.Config) -> None:
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
        "ProviderBaseUrl": mock_provider[0],
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
    template: dict[str, Any], stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> Callable[[str], ModuleType]:
    """Imports a function's ``app`` module fresh, with that function's environment from the template."""
    specs = {spec.logical_id: spec for spec in function_specs(template)}
    layer = str(ROOT / "layers" / "common")
    if layer not in sys.path:
        sys.path.insert(0, layer)

    def load(logical_id: str) -> ModuleType:
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
