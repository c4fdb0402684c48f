"""docs/openapi.json allows no request the API refuses: a client generated from it cannot send one.

Each refused request is checked twice: against the code that refuses it (the query model, the catalog,
the body parser, the idempotency key's pattern: the 4xx the API answers) and against the document's
schema, which must call it invalid too. A valid request of every route must validate.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from jsonschema import Draft202012Validator
from pydantic import ValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from billhub import idempotency
from billhub.api import json_object
from billhub.bills import MAX_CURSOR_LENGTH, BillFilters
from billhub.catalog import UnknownProvider, provider_entry
from localcloud.template import ROOT

DOCUMENT = json.loads((ROOT / "docs" / "openapi.json").read_text())
_BASE = "urn:billhub:openapi"
_REGISTRY = Registry().with_resource(_BASE, Resource.from_contents(DOCUMENT, default_specification=DRAFT202012))
ABSENT = object()
HEX = "0123456789abcdef" * 2
WEBHOOK_ID = "wh_" + HEX[:24]
Request = dict[str, Any]


def _pointer(*parts: str) -> str:
    return "/".join(part.replace("~", "~0").replace("/", "~1") for part in parts)


def _valid(pointer: str, value: Any) -> bool:
    validator = Draft202012Validator(
        {"$ref": f"{_BASE}#/{pointer}"}, registry=_REGISTRY, format_checker=Draft202012Validator.FORMAT_CHECKER
    )
    return bool(validator.is_valid(value))


def violations(method: str, path: str, request: Request) -> list[str]:
    """What in ``request`` (``path``, ``query``, ``header`` values as a client would send them, and ``body``,
    JSON or ``ABSENT``) the document's operation does not allow."""
    operation = DOCUMENT["paths"][path][method]
    problems = []
    for index, parameter in enumerate(operation.get("parameters", [])):
        values = request.get(parameter["in"], {})
        if parameter["name"] in values:
            pointer = _pointer("paths", path, method, "parameters", str(index), "schema")
            if not _valid(pointer, values[parameter["name"]]):
                problems.append(f"{parameter['in']} {parameter['name']}")
        elif parameter["required"]:
            problems.append(f"{parameter['in']} {parameter['name']} missing")
    body = request.get("body", ABSENT)
    request_body = operation.get("requestBody")
    if body is ABSENT:
        if request_body and request_body.get("required"):
            problems.append("body missing")
    elif request_body is None:
        problems.append("no body allowed")
    elif not _valid(_pointer("paths", path, method, "requestBody", "content", "application/json", "schema"), body):
        problems.append("body")
    return problems


LINK = {"provider": "clearwater", "credentials": {"api_key": "cw_sandbox_1"}}
# One valid request per documented operation (a new route needs one here).
VALID: dict[tuple[str, str], Request] = {
    ("get", "/providers"): {},
    ("get", "/accounts"): {},
    ("post", "/accounts/link"): {"body": LINK, "header": {"idempotency-key": "7f2c-uuid"}},
    ("get", "/accounts/oauth/{provider}/start"): {"path": {"provider": "sparkgrid"}, "query": {"nickname": "Home"}},
    ("get", "/accounts/oauth/{provider}/callback"): {
        "path": {"provider": "sparkgrid"},
        "query": {"state": "s.t-a_te", "code": "c0de"},
    },
    ("delete", "/accounts/{account_id}"): {"path": {"account_id": HEX}},
    ("put", "/accounts/{account_id}/credentials"): {
        "path": {"account_id": HEX},
        "body": {"credentials": {"api_key": "k"}},
    },
    ("post", "/auth/register"): {"body": {"email": "a@example.com", "password": "correct horse"}},
    ("post", "/auth/login"): {"body": {"email": "a@example.com", "password": "correct horse"}},
    ("get", "/bills"): {
        "query": {"status": "overdue", "from": "2026-01-01", "to": "2026-12-31", "limit": 200, "cursor": "eyJ-_9"}
    },
    ("get", "/bills/{provider}"): {"path": {"provider": "clearwater"}, "query": {"limit": 1}},
    ("post", "/bills/refresh"): {"body": {"account_ids": [HEX]}},
    ("get", "/bills/refresh/{job_id}"): {"path": {"job_id": HEX}},
    ("get", "/insights"): {"query": {"months": 12}},
    ("get", "/me"): {},
    ("patch", "/me"): {"body": {"preferences": {"due_soon_days": 7}}},
    ("delete", "/me"): {"body": {"password": "x"}},
    ("post", "/webhooks"): {
        "body": {"url": "https://hooks.example.com/billhub", "events": ["bill.created"], "description": "Home"}
    },
    ("get", "/webhooks"): {},
    ("get", "/webhooks/{webhook_id}"): {"path": {"webhook_id": WEBHOOK_ID}},
    ("delete", "/webhooks/{webhook_id}"): {"path": {"webhook_id": WEBHOOK_ID}},
    ("post", "/webhooks/{webhook_id}/rotate-secret"): {"path": {"webhook_id": WEBHOOK_ID}},
    ("post", "/webhooks/{webhook_id}/enable"): {"path": {"webhook_id": WEBHOOK_ID}},
    ("post", "/webhooks/{webhook_id}/test"): {"path": {"webhook_id": WEBHOOK_ID}},
    ("get", "/webhooks/{webhook_id}/deliveries"): {
        "path": {"webhook_id": WEBHOOK_ID},
        "query": {"limit": 20, "cursor": "eyJ-_9"},
    },
}
OPERATIONS = sorted((method, path) for path, item in DOCUMENT["paths"].items() for method in item)
BODY_OPERATIONS = [key for key in OPERATIONS if "requestBody" in DOCUMENT["paths"][key[1]][key[0]]]


def test_every_operation_has_a_valid_example() -> None:
    assert sorted(VALID) == OPERATIONS


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_a_valid_request_validates(method: str, path: str) -> None:
    assert violations(method, path, VALID[(method, path)]) == []


def test_an_optional_body_may_be_left_out_or_empty() -> None:
    assert violations("post", "/bills/refresh", {}) == []
    assert violations("post", "/bills/refresh", {"body": {}}) == []


def _refuses_filters(query: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):  # the API's 422
        BillFilters.model_validate({name: str(value) for name, value in query.items()})


def _refuses_provider(name: str) -> None:
    if re.fullmatch(DOCUMENT["paths"]["/bills/{provider}"]["get"]["parameters"][0]["schema"]["pattern"], name):
        with pytest.raises(UnknownProvider):  # the API's 400 unknown_provider
            provider_entry(name)


REFUSED_QUERIES = [
    {"status": "late"},
    {"status": "PAID"},
    {"limit": 0},
    {"limit": -1},
    {"limit": 201},
    {"from": "2026-13-01"},
    {"to": "2026-02-30"},
    {"from": "yesterday"},
    {"to": "01/02/2026"},
    {"cursor": ""},
    {"cursor": "has space"},
    {"cursor": "x" * (MAX_CURSOR_LENGTH + 1)},
]


@pytest.mark.parametrize("path", ["/bills", "/bills/{provider}"])
@pytest.mark.parametrize("query", REFUSED_QUERIES, ids=lambda query: json.dumps(query)[:40])
def test_a_refused_bill_filter_is_invalid(path: str, query: dict[str, Any]) -> None:
    _refuses_filters(query)
    request = {**VALID[("get", path)], "query": query}
    assert violations("get", path, request), f"the document allows {query} on GET {path}"


PROVIDER_ROUTES = [(method, path) for method, path in OPERATIONS if "{provider}" in path]


@pytest.mark.parametrize(("method", "path"), PROVIDER_ROUTES)
@pytest.mark.parametrize("name", ["acme", "nosuchco", "ClearWater", "x", ""])
def test_an_unknown_provider_in_the_path_is_invalid(method: str, path: str, name: str) -> None:
    _refuses_provider(name)
    request = VALID[(method, path)]
    assert violations(method, path, {**request, "path": {"provider": name}}) == ["path provider"]


@pytest.mark.parametrize("name", ["acme", "Clearwater"])
def test_an_unknown_provider_to_link_is_invalid(name: str) -> None:
    _refuses_provider(name)
    assert violations("post", "/accounts/link", {"body": {**LINK, "provider": name}}) == ["body"]


@pytest.mark.parametrize(("method", "path"), BODY_OPERATIONS)
@pytest.mark.parametrize("body", [None, [], [VALID[("post", "/accounts/link")]["body"]], "text", 1, True])
def test_a_body_that_is_not_an_object_is_invalid(method: str, path: str, body: Any) -> None:
    with pytest.raises(RequestValidationError):  # the API's 422
        json_object(json.dumps(body))
    assert violations(method, path, {**VALID[(method, path)], "body": body}) == ["body"]


IDEMPOTENT = [key for key in OPERATIONS if key in {("post", "/accounts/link"), ("post", "/bills/refresh")}]


@pytest.mark.parametrize(("method", "path"), IDEMPOTENT)
@pytest.mark.parametrize("key", ["", "has space", "é", "k" * 256])
def test_a_refused_idempotency_key_is_invalid(method: str, path: str, key: str) -> None:
    assert idempotency._KEY_PATTERN.fullmatch(key) is None  # the API's 400 invalid_idempotency_key
    request = {**VALID[(method, path)], "header": {"idempotency-key": key}}
    assert violations(method, path, request) == ["header idempotency-key"]
