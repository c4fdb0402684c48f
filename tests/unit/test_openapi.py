"""The committed OpenAPI document is what the code generates, and covers exactly the template's routes."""

from __future__ import annotations

import json
from typing import Any

from localcloud.openapi import SECURITY_SCHEME, build_document, render
from localcloud.template import ROOT, function_specs

COMMITTED = ROOT / "docs" / "openapi.json"


def test_the_committed_document_is_what_the_code_generates(template: dict[str, Any]) -> None:
    generated = render(build_document(template))
    assert COMMITTED.read_text() == generated, (
        "docs/openapi.json is out of date with the handlers or template.yaml: run `make openapi` and commit it"
    )


def test_every_template_route_is_documented_and_nothing_else(template: dict[str, Any]) -> None:
    document = json.loads(COMMITTED.read_text())
    routes = {(route.method, route.path): route for spec in function_specs(template) for route in spec.routes}
    documented = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    assert documented == set(routes)
    for (method, path), route in routes.items():
        operation = document["paths"][path][method.lower()]
        assert operation["security"] == ([{SECURITY_SCHEME: []}] if route.authorized else []), (method, path)
        names = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
        assert names == {piece.strip("{}") for piece in path.split("/") if piece.startswith("{")}, (method, path)


def test_errors_are_documented_with_the_error_shape() -> None:
    document = json.loads(COMMITTED.read_text())
    error = document["components"]["schemas"]["ErrorBody"]
    assert set(error["properties"]) == {"code", "message", "details"}
    for item in document["paths"].values():
        for operation in item.values():
            for status, response in operation["responses"].items():
                if status.startswith("4") and status not in ("401", "403"):
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (operation["operationId"], status)
