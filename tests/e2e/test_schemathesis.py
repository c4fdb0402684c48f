"""Property-based tests of the whole HTTP API against its own OpenAPI document (docs/openapi.json).

Schemathesis generates requests from the document, valid ones and ones the schema forbids, and sends them
through the local gateway to the real handlers, as a fresh user with one linked ClearWater account (so the
reads have data). Every answer must be free of 5xx and match the documented status codes and schemas.
Bounded and derandomized: the same examples on every run, in well under a minute.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from localcloud.template import ROOT
from tests.e2e.harness import Cloud, local_cloud, wait_until

EXAMPLES_PER_OPERATION = 12
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]

schema = schemathesis.openapi.from_path(str(ROOT / "docs" / "openapi.json"))
# The token of the fresh user goes in every request; generated Authorization headers would only test
# the authorizer, which tests/unit and test_local_cloud.py cover.
schema.config.generation.update(
    max_examples=EXAMPLES_PER_OPERATION, deterministic=True, with_security_parameters=False, no_shrink=True
)


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    workdir = tmp_path_factory.mktemp("schemathesis")
    with local_cloud(workdir, LOCALCLOUD_SEED="0") as started:
        yield started
    logs = "".join(path.read_text(errors="replace") for path in (workdir / "logs").glob("*Function.log"))
    assert "Traceback" not in logs, "a handler raised: see the function logs"


@pytest.fixture(scope="module")
def auth_headers(cloud: Cloud) -> dict[str, str]:
    headers = cloud.new_user("schemathesis@example.com")
    linked = cloud.api.post(
        "/accounts/link",
        headers=headers,
        json={"provider": "clearwater", "credentials": {"api_key": "cw_sandbox_schemathesis"}},
    )
    assert linked.status_code == 201, linked.text
    wait_until(lambda: cloud.api.get("/bills", headers=headers).json()["bills"], 30, "the first fetch")
    return headers


@schema.parametrize()
@hypothesis.settings(deadline=None, suppress_health_check=list(hypothesis.HealthCheck))
def test_the_api_keeps_its_documented_contract(
    case: schemathesis.Case[Any], cloud: Cloud, auth_headers: dict[str, str]
) -> None:
    response = case.call(base_url=str(cloud.api.base_url).rstrip("/"), headers=auth_headers, timeout=30)
    case.validate_response(response, checks=CHECKS)


def test_the_document_under_test_is_the_committed_one() -> None:
    # Guards the import-time load above against a stale or partial file.
    assert json.loads(Path(ROOT / "docs" / "openapi.json").read_text())["paths"]
