"""The HTTP API's Lambda REQUEST authorizer (payload 2.0, simple responses): verifies the bearer JWT."""

from __future__ import annotations

import os
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.data_classes import event_source
from aws_lambda_powertools.utilities.data_classes.api_gateway_authorizer_event import (
    APIGatewayAuthorizerEventV2,
    APIGatewayAuthorizerResponseV2,
)
from aws_lambda_powertools.utilities.typing import LambdaContext

from billhub.auth import TokenService, bearer_token, token_service
from billhub.errors import Unauthorized
from billhub.settings import JwtSettings

logger = Logger()
settings = JwtSettings.from_environ(os.environ)


@cache
def tokens() -> TokenService:
    return token_service(settings)


@logger.inject_lambda_context
@event_source(data_class=APIGatewayAuthorizerEventV2)
def handler(event: APIGatewayAuthorizerEventV2, context: LambdaContext) -> dict[str, Any]:
    try:
        claims = tokens().verify(bearer_token(event.headers.get("authorization")))
    except Unauthorized as error:
        logger.info("request not authorized", extra={"reason": error.message, "route": event.route_arn})
        return APIGatewayAuthorizerResponseV2(authorize=False).asdict()
    return APIGatewayAuthorizerResponseV2(authorize=True, context={"user_id": claims["sub"]}).asdict()
