"""The HTTP API's one OpenAPI document, built from the code: ``python -m localcloud.openapi > docs/openapi.json``.

Each function has its own Powertools resolver, which knows its routes, parameters, bodies and response
models. This imports every function that serves HTTP routes (with its template environment and no AWS
call: clients are created lazily) and merges their documents into one. What the resolvers cannot know
comes from ``template.yaml``, so it cannot drift: which routes the Lambda authorizer guards (bearer JWT)
and the API Gateway's own 401/403 answers on them.

Two things Powertools leaves out are put back from the code, so that the document allows no request the API
refuses: a query model's (``Annotated[BillFilters, Query()]``) fields, which Powertools flattens into
parameters of a bare type, get the model's own JSON schema (enums, bounds, formats, patterns); and a body,
which ``billhub.api.json_object`` refuses unless it is an object, is never ``null`` (an optional body model
is documented as a body that may be left out).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import sys
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel

from localcloud.provision import parameter_values
from localcloud.template import ROOT, FunctionSpec, function_specs, load_template
from mock_provider.registry import service_parameters

TITLE = "billhub API"
VERSION = "1.0.0"
DESCRIPTION = (
    "Bill aggregation: link accounts at utility providers, see every bill in one place with the totals due, "
    "refresh on demand and get spending insights. Money is a decimal string with its ISO 4217 currency; dates "
    'are ISO 8601; every error the service answers is `{"code", "message", "details"}`. Authenticate with '
    "`Authorization: Bearer <access_token>` from `POST /auth/login`."
)
SECURITY_SCHEME = "bearerAuth"
GATEWAY_ERROR = "GatewayError"
_PLACEHOLDER_ARN = "arn:aws:local:us-east-1:123456789012:{}"
_NOWHERE = "http://127.0.0.1:9"  # never called: building the document calls no provider


def _offline_parameters(template: dict[str, Any]) -> dict[str, str]:
    """The parameters' defaults, and the sandbox's endpoints and clients for those without one (the
    document depends on neither; the functions only need a valid configuration to import)."""
    return parameter_values(template.get("Parameters", {}), service_parameters(_NOWHERE, public_base_url=_NOWHERE))


def _offline_value(parameters: dict[str, str], value: Any) -> str:
    """A template environment value without a deployed stack: parameters' values, placeholders for resources."""
    if not isinstance(value, dict):
        return str(value)
    ((key, argument),) = value.items()
    if key == "Ref":
        if argument in parameters:
            return parameters[argument].strip()
        return _PLACEHOLDER_ARN.format(argument)
    if key == "Fn::GetAtt":
        return _PLACEHOLDER_ARN.format(".".join(argument))
    if key == "Fn::Sub" and isinstance(argument, str):
        # Each ${Name} as a Ref of it (the fetch lanes' JSON map of queue URLs, say), so the text keeps its shape.
        return re.sub(r"\$\{([^}]+)\}", lambda name: _offline_value(parameters, {"Ref": name[1]}), argument)
    return _PLACEHOLDER_ARN.format(key)


@contextlib.contextmanager
def _environment(variables: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.update(variables)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _load_resolver(template: dict[str, Any], spec: FunctionSpec) -> Any:
    """The function's Powertools resolver, its module imported as Lambda would with the template's environment."""
    layer = str(ROOT / "layers" / "common")
    if layer not in sys.path:
        sys.path.insert(0, layer)
    parameters = _offline_parameters(template)
    variables = {name: _offline_value(parameters, value) for name, value in spec.environment.items()}
    variables.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    variables.setdefault("POWERTOOLS_SERVICE_NAME", spec.logical_id)
    with _environment(variables):
        module_spec = importlib.util.spec_from_file_location(
            f"openapi_{spec.logical_id}", spec.code_dir / f"{spec.module}.py"
        )
        if module_spec is None or module_spec.loader is None:
            raise ImportError(f"cannot import {spec.code_dir / spec.module}.py")
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    return module.app


def _merge_schemas(into: dict[str, Any], schemas: dict[str, Any], owner: str) -> None:
    for name, schema in schemas.items():
        if name in into and into[name] != schema:
            raise ValueError(f"{owner} defines schema {name!r} differently from another function: rename one")
        into[name] = schema


def _referenced(node: Any, found: set[str]) -> None:
    if isinstance(node, dict):
        reference = node.get("$ref")
        if isinstance(reference, str) and reference.startswith("#/components/schemas/"):
            found.add(reference.rsplit("/", 1)[1])
        for value in node.values():
            _referenced(value, found)
    elif isinstance(node, list):
        for value in node:
            _referenced(value, found)


def _used_schemas(paths: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    """Only the schemas the operations reach (Powertools adds its own validation-error models to every resolver)."""
    used: set[str] = set()
    _referenced(paths, used)
    pending = list(used)
    while pending:
        found: set[str] = set()
        _referenced(schemas[pending.pop()], found)
        pending += sorted(found - used)
        used |= found
    return {name: schemas[name] for name in sorted(used)}


def _query_models(resolver: Any) -> dict[tuple[str, str], list[type[BaseModel]]]:
    """Each route's query models, by (OpenAPI path, method): the routes' own declarations, as Powertools reads them."""
    models: dict[tuple[str, str], list[type[BaseModel]]] = {}
    for route in [*resolver._static_routes, *resolver._dynamic_routes]:
        for parameter in route.dependant.query_params:
            annotation = parameter.field_info.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                models.setdefault((route.openapi_path, route.method.lower()), []).append(annotation)
    return models


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """An optional value's schema without its ``null`` branch: a parameter or a body is left out, never null."""
    branches = schema.get("anyOf")
    if not isinstance(branches, list) or {"type": "null"} not in branches:
        return schema
    kept = [branch for branch in branches if branch != {"type": "null"}]
    rest = {key: value for key, value in schema.items() if key != "anyOf" and (key, value) != ("default", None)}
    return {**kept[0], **rest} if len(kept) == 1 else {**rest, "anyOf": kept}


def _document_query_model(operation: dict[str, Any], model: type[BaseModel], schemas: dict[str, Any]) -> None:
    """Gives the parameters Powertools flattened from ``model`` the model's schema for each field."""
    schema = model.model_json_schema(by_alias=True, ref_template="#/components/schemas/{model}")
    _merge_schemas(schemas, schema.pop("$defs", {}), model.__name__)
    properties: dict[str, Any] = schema["properties"]
    documented = set()
    for parameter in operation.get("parameters", []):
        field = properties.get(parameter["name"])
        if parameter["in"] != "query" or field is None:
            continue
        field = _without_null(field)
        description = field.pop("description", None)
        if description:
            parameter["description"] = description
        parameter["schema"] = field
        documented.add(parameter["name"])
    if missing := sorted(set(properties) - documented):
        raise ValueError(f"{model.__name__} fields {missing} are not among the operation's query parameters")


def _object_bodies(operation: dict[str, Any]) -> None:
    for media in operation.get("requestBody", {}).get("content", {}).values():
        if "schema" in media:
            media["schema"] = _without_null(media["schema"])


def _gateway_responses() -> dict[str, Any]:
    reference = {"$ref": f"#/components/schemas/{GATEWAY_ERROR}"}
    content = {"application/json": {"schema": reference}}
    return {
        "401": {"description": "No bearer token (answered by API Gateway).", "content": content},
        "403": {"description": "The bearer token is invalid or expired (answered by API Gateway).", "content": content},
    }


def _finish_operation(operation: dict[str, Any], authorized: bool) -> None:
    responses: dict[str, Any] = operation["responses"]
    for status, response in responses.items():
        if status == "204" or response.get("content") in ({}, {"application/json": {}}):
            response.pop("content", None)  # no body
    if authorized:
        operation["security"] = [{SECURITY_SCHEME: []}]
        for status, response in _gateway_responses().items():
            responses.setdefault(status, response)
    else:
        operation["security"] = []  # the template sets Auth: NONE on this route
    operation["responses"] = dict(sorted(responses.items()))


def build_document(template: dict[str, Any] | None = None) -> dict[str, Any]:
    template = template if template is not None else load_template()
    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {}
    for spec in function_specs(template):
        if not spec.routes:
            continue
        resolver = _load_resolver(template, spec)
        document = resolver.get_openapi_schema().model_dump(mode="json", by_alias=True, exclude_none=True)
        _merge_schemas(schemas, document.get("components", {}).get("schemas", {}), spec.logical_id)
        query_models = _query_models(resolver)
        for route in spec.routes:
            operation = document["paths"].get(route.path, {}).get(route.method.lower())
            if operation is None:
                raise ValueError(
                    f"{spec.logical_id} has no handler for the template's route {route.method} {route.path}"
                )
            for model in query_models.get((route.path, route.method.lower()), []):
                _document_query_model(operation, model, schemas)
            _object_bodies(operation)
            _finish_operation(operation, route.authorized)
            paths.setdefault(route.path, {})[route.method.lower()] = operation
        for path, item in document["paths"].items():
            for method in item:
                if method not in paths.get(path, {}):
                    raise ValueError(f"{spec.logical_id} serves {method.upper()} {path}, which template.yaml lacks")
    schemas[GATEWAY_ERROR] = {
        "title": GATEWAY_ERROR,
        "type": "object",
        "properties": {"message": {"type": "string", "title": "Message"}},
        "required": ["message"],
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": TITLE, "version": VERSION, "description": DESCRIPTION},
        "servers": [{"url": "/"}],
        "security": [{SECURITY_SCHEME: []}],
        "paths": {path: dict(sorted(paths[path].items())) for path in sorted(paths)},
        "components": {
            "schemas": _used_schemas(paths, schemas),
            "securitySchemes": {
                SECURITY_SCHEME: {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "The access_token from POST /auth/login.",
                }
            },
        },
    }


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def main() -> None:
    sys.stdout.write(render(build_document()))


if __name__ == "__main__":
    main()
