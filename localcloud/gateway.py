"""A local stand-in for API Gateway's HTTP API: routes, the Lambda authorizer, payload format 2.0.

Every request becomes the event API Gateway would send (the shape ``sam local generate-event
apigateway http-api-proxy`` prints); routes that need auth first run the template's authorizer with
a REQUEST event and answer 401/403 as API Gateway does.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flask import Flask, Response, request

from localcloud.runtime import FunctionRuntime, InvocationError
from localcloud.template import HttpRoute

logger = logging.getLogger("localcloud.gateway")
API_ID = "local"
_PARAMETER = re.compile(r"\{([^}+]+)\+?\}")


@dataclass(frozen=True)
class BoundRoute:
    route: HttpRoute
    runtime: FunctionRuntime
    pattern: re.Pattern[str]

    @property
    def route_key(self) -> str:
        return f"{self.route.method} {self.route.path}"

    @property
    def specificity(self) -> tuple[int, int]:
        # API Gateway prefers the route with the most literal path.
        return (-self.route.path.count("{"), len(self.route.path))


def _compile(path: str) -> re.Pattern[str]:
    regex = ""
    for piece in re.split(r"(\{[^}]+\})", path):
        if piece.startswith("{"):
            name = piece.strip("{}+")
            regex += f"(?P<{name}>.+)" if piece.endswith("+}") else f"(?P<{name}>[^/]+)"
        else:
            regex += re.escape(piece)
    return re.compile(f"^{regex}$")


def create_gateway(
    routes: list[tuple[HttpRoute, FunctionRuntime]],
    authorizer: FunctionRuntime,
    cors: dict[str, Any],
    region: str,
) -> Flask:
    bound = sorted(
        (BoundRoute(route, runtime, _compile(route.path)) for route, runtime in routes),
        key=lambda item: item.specificity,
        reverse=True,
    )
    app = Flask("localcloud.gateway")

    @app.route("/", defaults={"path": ""}, methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"])
    @app.route("/<path:path>", methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"])
    def proxy(path: str) -> Response:
        raw_path = "/" + path
        if request.method == "OPTIONS" and cors:
            return _with_cors(Response(status=204), cors, preflight=True)
        match = _match(bound, request.method, raw_path)
        if match is None:
            return _with_cors(_json_message(404, "Not Found"), cors)
        target, parameters = match
        event = _http_event(target.route_key, raw_path, parameters, region)
        if target.route.authorized:
            denied = _authorize(authorizer, target, event, region)
            if isinstance(denied, Response):
                return _with_cors(denied, cors)
            event["requestContext"]["authorizer"] = {"lambda": denied}
        try:
            result = target.runtime.invoke(event)
        except InvocationError:
            logger.exception("function failed for %s", target.route_key)
            return _with_cors(_json_message(500, "Internal Server Error"), cors)
        return _with_cors(_to_response(result), cors)

    return app


def _match(bound: list[BoundRoute], method: str, path: str) -> tuple[BoundRoute, dict[str, str]] | None:
    for candidate in bound:
        if candidate.route.method not in (method, "ANY"):
            continue
        found = candidate.pattern.match(path)
        if found:
            return candidate, found.groupdict()
    return None


def _headers() -> dict[str, str]:
    merged: dict[str, list[str]] = {}
    for name, value in request.headers.items():
        if name.lower() == "cookie":
            continue
        merged.setdefault(name.lower(), []).append(value)
    # API Gateway tells the function how the client reached it; here it is plain HTTP on loopback.
    merged.setdefault("x-forwarded-proto", [request.scheme])
    merged.setdefault("x-forwarded-for", [request.remote_addr or "127.0.0.1"])
    return {name: ",".join(values) for name, values in merged.items()}


def _request_context(route_key: str, region: str) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "accountId": "123456789012",
        "apiId": API_ID,
        "domainName": request.host,
        "domainPrefix": request.host.split(".")[0],
        "http": {
            "method": request.method,
            "path": request.path,
            "protocol": request.environ.get("SERVER_PROTOCOL", "HTTP/1.1"),
            "sourceIp": request.remote_addr or "127.0.0.1",
            "userAgent": request.headers.get("User-Agent", ""),
        },
        "requestId": uuid.uuid4().hex,
        "routeKey": route_key,
        "stage": "$default",
        "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
        "timeEpoch": int(time.time() * 1000),
    }


def _http_event(route_key: str, raw_path: str, parameters: dict[str, str], region: str) -> dict[str, Any]:
    body = request.get_data()
    try:
        text, is_base64 = body.decode("utf-8"), False
    except UnicodeDecodeError:
        text, is_base64 = base64.b64encode(body).decode(), True
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": raw_path,
        "rawQueryString": request.query_string.decode(),
        "headers": _headers(),
        "requestContext": _request_context(route_key, region),
        "isBase64Encoded": is_base64,
    }
    if request.cookies:
        event["cookies"] = [f"{name}={value}" for name, value in request.cookies.items()]
    if request.args:
        event["queryStringParameters"] = {name: ",".join(request.args.getlist(name)) for name in request.args}
    if parameters:
        event["pathParameters"] = parameters
    if body:
        event["body"] = text
    return event


def _authorize(
    authorizer: FunctionRuntime, target: BoundRoute, event: dict[str, Any], region: str
) -> dict[str, Any] | Response:
    """The authorizer's context when it allows the request, else API Gateway's own 401/403."""
    identity = event["headers"].get("authorization")
    if not identity:
        return _json_message(401, "Unauthorized")
    authorizer_event = {
        **{key: value for key, value in event.items() if key not in ("body", "isBase64Encoded")},
        "type": "REQUEST",
        "routeArn": f"arn:aws:execute-api:{region}:123456789012:{API_ID}/$default/"
        f"{target.route.method}{event['rawPath']}",
        "identitySource": [identity],
    }
    try:
        answer = authorizer.invoke(authorizer_event)
    except InvocationError:
        logger.exception("authorizer failed")
        return _json_message(500, "Internal Server Error")
    if not answer.get("isAuthorized"):
        return _json_message(403, "Forbidden")
    context: dict[str, Any] = answer.get("context") or {}
    return context


def _to_response(result: Any) -> Response:
    if not isinstance(result, dict) or "statusCode" not in result:
        # Payload 2.0 infers a 200 JSON answer from a bare return value.
        return Response(json.dumps(result), status=200, content_type="application/json")
    body = result.get("body") or ""
    data = base64.b64decode(body) if result.get("isBase64Encoded") else body.encode()
    response = Response(data, status=int(result["statusCode"]))
    for name, value in (result.get("headers") or {}).items():
        response.headers[name] = str(value)
    for name, values in (result.get("multiValueHeaders") or {}).items():
        for value in values:
            response.headers.add(name, str(value))
    for cookie in result.get("cookies") or []:
        response.headers.add("Set-Cookie", cookie)
    return response


def _json_message(status: int, message: str) -> Response:
    return Response(json.dumps({"message": message}), status=status, content_type="application/json")


def _with_cors(response: Response, cors: dict[str, Any], preflight: bool = False) -> Response:
    if not cors:
        return response
    response.headers["Access-Control-Allow-Origin"] = ",".join(cors.get("AllowOrigins", ["*"]))
    if cors.get("ExposeHeaders"):
        response.headers["Access-Control-Expose-Headers"] = ",".join(cors["ExposeHeaders"])
    if preflight:
        response.headers["Access-Control-Allow-Methods"] = ",".join(cors.get("AllowMethods", []))
        response.headers["Access-Control-Allow-Headers"] = ",".join(cors.get("AllowHeaders", []))
        response.headers["Access-Control-Max-Age"] = str(cors.get("MaxAge", 0))
    return response
