"""What every HTTP handler shares: the resolver, the caller's identity and the JSON error shape.

Every error leaves as ``{"code", "message", "details"}`` with its status; nothing escapes as a bare 500.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError

from billhub.errors import ServiceError, Unauthorized

logger = Logger(child=True)

MAX_BODY_BYTES = 16 * 1024


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
        return super().resolve(event, context)


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
