"""What every HTTP handler shares: the resolver, the table and the caller's identity its routes are given
(Powertools' ``Depends``), and the JSON error shape.

Every error leaves as ``{"code", "message", "details"}`` with its status; nothing escapes as a bare 500.
Request bodies are I-JSON (RFC 7493) objects: anything else is refused before a route sees it.
"""

from __future__ import annotations

import base64
import json
import math
import os
from collections.abc import Mapping
from functools import cache
from http import HTTPStatus
from typing import TYPE_CHECKING, Annotated, Any, cast

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Depends, Request, Response, content_types
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)
from aws_lambda_powertools.event_handler.openapi.params import Path
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from botocore.exceptions import ClientError
from pydantic import BaseModel

from billhub.catalog import PROVIDER_NAME_PATTERN, PROVIDER_NAMES_SCHEMA
from billhub.errors import ServiceError, TryAgain, Unauthorized
from billhub.runtime import aws_client
from billhub.settings import TableSettings
from billhub.store import BillsTable, ConcurrentUpdate

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2

logger = Logger(child=True)

MAX_BODY_BYTES = 16 * 1024
# What DynamoDB answers under load and contention that botocore's own retries (and the store's, for
# conflicts) did not outlast: nothing was applied, and the caller's retry a moment later goes through.
TRANSIENT_AWS_ERRORS = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
        "TransactionConflictException",
    }
)
# Sent with every answer, errors included: API Gateway's HTTP API adds none. Answers hold tokens, personal
# and financial data, so no cache (browser, proxy, CDN) may keep one; the rest stops browsers sniffing
# JSON into something else, framing or embedding an answer, sending the URL on, or ever using plain HTTP.
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Strict-Transport-Security": "max-age=63072000; includeSubDomains",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
# Deeper than any body this API takes (``{"credentials": {"name": "value"}}`` is 2), and shallow enough
# that nothing walking a body (pydantic, an error message) can run out of stack.
MAX_BODY_DEPTH = 8
# A ``{provider}`` path segment: the pattern is checked (422), the name looked up by the route (400
# ``unknown_provider``); the document lists the catalog's names.
ProviderPath = Annotated[str, Path(pattern=PROVIDER_NAME_PATTERN, json_schema_extra=PROVIDER_NAMES_SCHEMA)]


class ErrorBody(BaseModel):
    """The body of every error this API answers with (documentation only: ``error_response`` writes it)."""

    code: str
    message: str
    details: Any = None


ERROR_DESCRIPTIONS = {
    400: "Bad request: the body is not JSON, or a value the route checks itself is wrong.",
    401: "Unauthorized: no valid bearer token, or the email or password is wrong.",
    404: "Not found: no such route, or the resource is not the caller's.",
    409: "Conflict: the resource exists or changed meanwhile (try again), a limit is reached (`too_many_accounts`, "
    "`too_many_webhooks`), or the webhook is disabled (`webhook_disabled`).",
    413: "The request body is larger than the API accepts.",
    415: "The request body is not `application/json`.",
    422: "The request is invalid (`validation_error`: `details` lists each problem; `invalid_credentials_format`), "
    "the provider refused the credentials, a webhook URL is refused (`webhook_url_refused`), or an "
    "`Idempotency-Key` was reused with another body.",
    429: "Too many requests: try again after the `Retry-After` seconds (also `details.retry_after`).",
    503: "A provider or a dependency is unavailable right now, or the service is busy (`try_again`); "
    "try again later (after `Retry-After` seconds where it is sent).",
}


def documented(status: int = 200, *errors: int, description: str = "Successful Response") -> dict[int, OpenAPIResponse]:
    """A route's OpenAPI responses: its success (schema from the return annotation) and each error it answers.

    422 (request validation) is always listed: Powertools validates every route's parameters and body;
    so is 503, since every route reads or writes the store (``try_again``).
    """
    answer: dict[int, OpenAPIResponse] = {status: {"description": description}}
    for code in sorted({*errors, 422, 503}):
        answer[code] = {
            "description": ERROR_DESCRIPTIONS[code],
            "content": {content_types.APPLICATION_JSON: {"model": ErrorBody}},
        }
    return answer


def error_response(
    status: int, code: str, message: str, details: Any = None, headers: dict[str, str] | None = None
) -> Response[str]:
    return Response(
        status_code=status,
        content_type=content_types.APPLICATION_JSON,
        body=json.dumps({"code": code, "message": message, "details": details}),
        headers=headers,
    )


def service_error_response(error: ServiceError) -> Response[str]:
    return error_response(error.status, error.code, error.message, error.details, error.headers or None)


def internal_error_response() -> Response[str]:
    """Logs the error being handled, with its traceback; the caller learns only that it was ours."""
    logger.exception("unhandled error")
    return error_response(HTTPStatus.INTERNAL_SERVER_ERROR, "internal_error", "Something went wrong on our side.")


class InvalidJson(ValueError):
    """A body that is not I-JSON: Python's parser failed on it, or would have let through what breaks later."""


def _refuse_constant(name: str) -> Any:
    raise InvalidJson(f"{name} is not a JSON number.")


def _finite_float(literal: str) -> float:
    number = float(literal)
    if not math.isfinite(number):  # 1e999999 parses as inf
        raise InvalidJson("A number is out of range.")
    return number


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    members = dict(pairs)
    if len(members) != len(pairs):  # json.loads would keep the last of them, other parsers the first
        raise InvalidJson("An object has the same member name twice.")
    return members


def _check_depth_and_strings(value: Any) -> None:
    """Refuses nesting deeper than ``MAX_BODY_DEPTH`` and strings (member names too) that are not Unicode
    text: a ``\\ud800`` escape parses into a lone surrogate, which fails wherever it is encoded (a password
    hash, DynamoDB). Walks iteratively, so a deep body cannot exhaust the stack here either."""
    pending: list[tuple[Any, int]] = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, str):
            if not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError as error:
                    raise InvalidJson("A string is not valid Unicode (a lone surrogate).") from error
        elif isinstance(item, dict | list):
            if depth >= MAX_BODY_DEPTH:
                raise InvalidJson(f"The body is nested deeper than {MAX_BODY_DEPTH} levels.")
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            pending.extend((child, depth + 1) for child in children)


def _why_invalid(error: ValueError | RecursionError) -> str:
    if isinstance(error, json.JSONDecodeError):
        return f"{error.msg} at character {error.pos}."
    if isinstance(error, InvalidJson):
        return str(error)
    if isinstance(error, RecursionError):
        return f"The body is nested deeper than {MAX_BODY_DEPTH} levels."
    return "A number has too many digits."  # int() refuses more than sys.get_int_max_str_digits()


def json_object(text: str) -> dict[str, Any]:
    """A request body as a JSON object, for Powertools' request validation (its ``json_body_deserializer``).

    Powertools would take a list's first element for a body model, and lets a parser failure other than a
    syntax error (an integer of more than 4,300 digits, a stack overflow) escape as a 500. Here every
    failure is ``400 invalid_json``, and a valid JSON text that is not an object a ``422``. Powertools
    parses a body only for a route that takes one, so other routes ignore a body as before.
    """
    try:
        value = json.loads(
            text, parse_constant=_refuse_constant, parse_float=_finite_float, object_pairs_hook=_unique_members
        )
        _check_depth_and_strings(value)
    except (ValueError, RecursionError) as error:  # JSONDecodeError and InvalidJson are ValueErrors
        raise RequestValidationError(
            [{"type": "json_invalid", "loc": ("body",), "msg": _why_invalid(error), "input": {}}]
        ) from error
    if not isinstance(value, dict):
        raise RequestValidationError(
            [{"type": "model_type", "loc": ("body",), "msg": "The body must be a JSON object.", "input": {}}]
        )
    return value


class Resolver(APIGatewayHttpResolver):
    """The HTTP API resolver with request validation, refusing oversized bodies before parsing them, and
    sending ``SECURITY_HEADERS`` with every answer."""

    def resolve(self, event: Mapping[str, Any], context: Any) -> dict[str, Any]:
        refused = _refused_before_routing(event)
        answer = _as_http_api_response(refused) if refused else super().resolve(event, context)
        return with_security_headers(answer)


def with_security_headers(answer: dict[str, Any]) -> dict[str, Any]:
    """The answer with ``SECURITY_HEADERS`` added, each unless the answer already has one of that name.

    Added to the finished answer rather than by a Powertools middleware: exception handlers' answers and
    the refusals before routing never pass through the middlewares.
    """
    headers = dict(answer.get("headers") or {})
    present = {name.lower() for name in headers}
    headers.update({name: value for name, value in SECURITY_HEADERS.items() if name.lower() not in present})
    return {**answer, "headers": headers}


def _refused_before_routing(event: Mapping[str, Any]) -> Response[str] | None:
    body = event.get("body") or ""
    if len(body) > MAX_BODY_BYTES:  # base64 or text: either way longer than the limit allows
        return error_response(
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
            "body_too_large",
            f"Request bodies are limited to {MAX_BODY_BYTES} bytes.",
        )
    if body and event.get("isBase64Encoded") and not _is_utf8(body):
        return error_response(
            HTTPStatus.BAD_REQUEST, "invalid_json", "The request body is not valid JSON.", {"reason": "Not UTF-8."}
        )
    if body and not _is_json(event.get("headers") or {}):
        # Powertools would parse forms and multipart (and fail on a malformed one): this API speaks JSON only.
        return error_response(
            HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", "Send the body as application/json."
        )
    return None


def _is_utf8(encoded: str) -> bool:
    """Whether a base64 body (API Gateway sends non-text bodies so) is UTF-8 text that JSON could be."""
    try:
        base64.b64decode(encoded).decode("utf-8")
    except ValueError:  # binascii.Error and UnicodeDecodeError both are
        return False
    return True


def _is_json(headers: Mapping[str, str]) -> bool:
    content_type = next((value for name, value in headers.items() if name.lower() == "content-type"), "")
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type in ("", "application/json") or media_type.endswith("+json")


def _as_http_api_response(response: Response[str]) -> dict[str, Any]:
    return {
        "statusCode": response.status_code,
        "headers": {"Content-Type": content_types.APPLICATION_JSON},
        "body": response.body,
        "isBase64Encoded": False,
    }


def create_resolver() -> Resolver:
    app = Resolver(enable_validation=True, json_body_deserializer=json_object)

    @app.exception_handler(ServiceError)
    def _service_error(error: ServiceError) -> Response[str]:
        return service_error_response(error)

    @app.exception_handler(RequestValidationError)
    def _validation_error(error: RequestValidationError) -> Response[str]:
        problems = [
            {"loc": list(problem["loc"]), "type": problem["type"], "message": problem.get("msg", "")}
            for problem in error.errors()
        ]
        invalid = [problem["message"] for problem in problems if problem["type"] == "json_invalid"]
        if invalid:
            return error_response(
                HTTPStatus.BAD_REQUEST, "invalid_json", "The request body is not valid JSON.", {"reason": invalid[0]}
            )
        return error_response(HTTPStatus.UNPROCESSABLE_ENTITY, "validation_error", "The request is invalid.", problems)

    @app.exception_handler(RequestUnsupportedContentType)
    def _unsupported_content_type(_: RequestUnsupportedContentType) -> Response[str]:
        return error_response(
            HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", "Send the body as application/json."
        )

    @app.not_found
    def _not_found(_: Exception) -> Response[str]:
        return error_response(HTTPStatus.NOT_FOUND, "not_found", "No such route.")

    @app.exception_handler(ConcurrentUpdate)
    def _still_contended(_: ConcurrentUpdate) -> Response[str]:
        logger.warning("store still contended after its retries")
        return service_error_response(TryAgain())

    @app.exception_handler(Exception)
    def _unexpected(_: Exception) -> Response[str]:
        return internal_error_response()

    @app.exception_handler(ClientError)
    def _aws_error(error: ClientError) -> Response[str]:
        if error.response.get("Error", {}).get("Code") in TRANSIENT_AWS_ERRORS:
            logger.warning("store still busy after botocore's retries", extra={"code": error.response["Error"]["Code"]})
            return service_error_response(TryAgain())
        return internal_error_response()

    return app


@cache
def bills_table() -> BillsTable:
    """The table, with its DynamoDB client: built once per execution environment, at the first request that
    needs it or before the SnapStart snapshot by a function that registers it as a hook."""
    return BillsTable(aws_client("dynamodb"), TableSettings.from_environ(os.environ).TABLE_NAME)


def caller_id(request: Request) -> str:
    """The user id the authorizer verified. Never taken from the request path, query or body."""
    event = cast("APIGatewayProxyEventV2", request.resolved_event)
    user_id = event.request_context.authorizer.get_lambda.get("user_id")
    if not user_id:
        raise Unauthorized("Missing caller identity.")
    return str(user_id)


# What a route declares to be given (resolved before it runs, never documented as a parameter):
# ``store: Store`` the table, ``user_id: CallerId`` the caller. A test may swap either through the
# resolver's ``dependency_overrides``, keyed by ``bills_table`` or ``caller_id``.
Store = Annotated[BillsTable, Depends(bills_table)]
CallerId = Annotated[str, Depends(caller_id)]
