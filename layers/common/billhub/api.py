"""What every HTTP handler shares: the resolver, the caller's identity and the JSON error shape.

Every error leaves as ``{"code", "message", "details"}`` with its status; nothing escapes as a bare 500.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from pydantic import BaseModel

from billhub.errors import ServiceError, Unauthorized

logger = Logger(child=True)

MAX_BODY_BYTES = 16 * 1024


class ErrorBody(BaseModel):
    """The body of every error this API answers with (documentation only: ``error_response`` writes it)."""

    code: str
    message: str
    details: Any = None


ERROR_DESCRIPTIONS = {
    400: "Bad request: the body is not JSON, or a value the route checks itself is wrong.",
    401: "Unauthorized: no valid bearer token, or the email or password is wrong.",
    404: "Not found: no such route, or the resource is not the caller's.",
    409: "Conflict: the resource exists or changed meanwhile; try again.",
    413: "The request body is larger than the API accepts.",
    415: "The request body is not `application/json`.",
    422: "The request is invalid (`details` lists each problem), or the provider refused the credentials.",
    429: "Too many requests: try again after the `Retry-After` seconds.",
    503: "A provider or a dependency is unavailable right now; try again later.",
}


def documented(status: int = 200, *errors: int, description: str = "Successful Response") -> dict[int, OpenAPIResponse]:
    """A route's OpenAPI responses: its success (schema from the return annotation) and each error it answers.

    422 (request validation) is always listed: Powertools validates every route's parameters and body.
    """
    answer: dict[int, OpenAPIResponse] = {status: {"description": description}}
    for code in sorted({*errors, 422}):
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


class Resolver(APIGatewayHttpResolver):
    """The HTTP API resolver with request validation, refusing oversized bodies before parsing them."""

    def resolve(self, event: Mapping[str, Any], context: Any) -> dict[str, Any]:
        body = event.get("body") or ""
        if len(body) > MAX_BODY_BYTES:  # base64 or text: either way longer than the limit allows
            response = error_response(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                "body_too_large",
                f"Request bodies are limited to {MAX_BODY_BYTES} bytes.",
            )
            return _as_http_api_response(response)
        if body and event.get("isBase64Encoded") and not _is_utf8(body):
            response = error_response(HTTPStatus.BAD_REQUEST, "invalid_json", "The request body is not valid JSON.")
            return _as_http_api_response(response)
        if body and not _is_json(event.get("headers") or {}):
            # Powertools would parse forms and multipart (and fail on a malformed one): this API speaks JSON only.
            response = error_response(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", "Send the body as application/json."
            )
            return _as_http_api_response(response)
        return super().resolve(event, context)


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
    app = Resolver(enable_validation=True)

    @app.exception_handler(ServiceError)
    def _service_error(error: ServiceError) -> Response[str]:
        return error_response(error.status, error.code, error.message, error.details, error.headers or None)

    @app.exception_handler(RequestValidationError)
    def _validation_error(error: RequestValidationError) -> Response[str]:
        problems = [
            {"loc": list(problem["loc"]), "type": problem["type"], "message": problem.get("msg", "")}
            for problem in error.errors()
        ]
        if any(problem["type"] == "json_invalid" for problem in problems):
            return error_response(HTTPStatus.BAD_REQUEST, "invalid_json", "The request body is not valid JSON.")
        return error_response(HTTPStatus.UNPROCESSABLE_ENTITY, "validation_error", "The request is invalid.", problems)

    @app.exception_handler(RequestUnsupportedContentType)
    def _unsupported_content_type(_: RequestUnsupportedContentType) -> Response[str]:
        return error_response(
            HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", "Send the body as application/json."
        )

    @app.not_found
    def _not_found(_: Exception) -> Response[str]:
        return error_response(HTTPStatus.NOT_FOUND, "not_found", "No such route.")

    @app.exception_handler(Exception)
    def _unexpected(error: Exception) -> Response[str]:
        logger.exception("unhandled error")
        return error_response(HTTPStatus.INTERNAL_SERVER_ERROR, "internal_error", "Something went wrong on our side.")

    return app


def caller_id(app: Resolver) -> str:
    """The user id the authorizer verified. Never taken from the request path, query or body."""
    user_id = app.current_event.request_context.authorizer.get_lambda.get("user_id")
    if not user_id:
        raise Unauthorized("Missing caller identity.")
    return str(user_id)
