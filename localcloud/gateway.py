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
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aws_lambda_powertools.event_handler.openapi import swagger_ui
from aws_lambda_powertools.event_handler.openapi.swagger_ui.html import generate_swagger_html
from flask import Flask, Response, request, send_from_directory

from localcloud.runtime import FunctionRuntime, InvocationError
from localcloud.template import ROOT, HttpRoute

logger = logging.getLogger("localcloud.gateway")
API_ID = "local"
_PARAMETER = re.compile(r"\{([^}+]+)\+?\}")
OPENAPI_DOCUMENT = ROOT / "docs" / "openapi.json"
# Powertools ships Swagger UI's script and style sheet: the page needs nothing from the internet.
_SWAGGER_ASSETS = Path(swagger_ui.__file__).parent


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


class AuthorizerVerdicts:
    """API Gateway reuses an authorizer's verdict for the same identity (the Authorization header) for
    ``ReauthorizeEvery`` seconds; so does the local gateway, allow and deny alike."""

    def __init__(self, ttl_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl_seconds
        self._clock = clock
        self._verdicts: dict[str, tuple[float, dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def get(self, identity: str) -> dict[str, Any] | None:
        with self._lock:
            cached = self._verdicts.get(identity)
            if cached is None or self._clock() >= cached[0]:
                self._verdicts.pop(identity, None)
                return None
            return cached[1]

    def put(self, identity: str, answer: dict[str, Any]) -> None:
        if self._ttl > 0:
            with self._lock:
                self._verdicts[identity] = (self._clock() + self._ttl, answer)


def create_gateway(
    routes: list[tuple[HttpRoute, FunctionRuntime]],
    authorizer: FunctionRuntime,
    cors: dict[str, Any],
    region: str,
    authorizer_cache_seconds: float = 0,
) -> Flask:
    bound = sorted(
        (BoundRoute(route, runtime, _compile(route.path)) for route, runtime in routes),
        key=lambda item: item.specificity,
        reverse=True,
    )
    app = Flask("localcloud.gateway")
    _add_docs(app)
    verdicts = AuthorizerVerdicts(authorizer_cache_seconds)

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
            denied = _authorize(authorizer, verdicts, target, event, region)
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


def _add_docs(app: Flask) -> None:
    """Swagger UI at /docs and the committed OpenAPI document at /docs/openapi.json: local only, no auth."""

    @app.get("/docs")
    def docs() -> Response:
        document = OPENAPI_DOCUMENT.read_text()
        if request.args.get("format") == "json":  # where Swagger UI's own link points
            return Response(document, content_type="application/json")
        page = generate_swagger_html(
            spec=document,
            swagger_js="/docs/swagger-ui-bundle.min.js",
            swagger_css="/docs/swagger-ui.min.css",
            swagger_base_url="/docs",
            oauth2_config=None,
            persist_authorization=True,
        )
        return Response(page, content_type="text/html; charset=utf-8")

    @app.get("/docs/openapi.json")
    def openapi_document() -> Response:
        return Response(OPENAPI_DOCUMENT.read_text(), content_type="application/json")

    @app.get("/docs/<any('swagger-ui-bundle.min.js', 'swagger-ui.min.css'):asset>")
    def swagger_asset(asset: str) -> Response:
        return send_from_directory(_SWAGGER_ASSETS, asset, max_age=3600)


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
    authorizer: FunctionRuntime, verdicts: AuthorizerVerdicts, target: BoundRoute, event: dict[str, Any], region: str
) -> dict[str, Any] | Response:
    """The authorizer's context when it allows the request, else API Gateway's own 401/403."""
    identity = event["headers"].get("authorization")
    if not identity:
        return _json_message(401, "Unauthorized")
    answer = verdicts.get(identity)
    if answer is None:
        asked = _ask_authorizer(authorizer, target, event, region, identity)
        if isinstance(asked, Response):
            return asked
        verdicts.put(identity, asked)
        answer = asked
    if not answer.get("isAuthorized"):
        return _json_message(403, "Forbidden")
    context: dict[str, Any] = answer.get("context") or {}
    return context


def _ask_authorizer(
    authorizer: FunctionRuntime, target: BoundRoute, event: dict[str, Any], region: str, identity: str
) -> dict[str, Any] | Response:
    authorizer_event = {
        **{key: value for key, value in event.items() if key not in ("body", "isBase64Encoded")},
        "type": "REQUEST",
        "routeArn": f"arn:aws:execute-api:{region}:123456789012:{API_ID}/$default/"
        f"{target.route.method}{event['rawPath']}",
        "identitySource": [identity],
    }
    try:
        answer: dict[str, Any] = authorizer.invoke(authorizer_event)
    except InvocationError:
        logger.exception("authorizer failed")
        return _json_message(500, "Internal Server Error")
    return answer


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
