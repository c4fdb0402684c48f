"""The HTTP API's Lambda REQUEST authorizer (payload 2.0, simple responses): verifies the bearer JWT
and that its user still exists."""

from __future__ import annotations

import os
from functools import cache
from typing import Any

# Every call verifies a token: pyjwt, which billhub.auth imports only where a token is used, loads during
# init with everything else this function always needs, not in its first request.
import jwt  # noqa: F401
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.data_classes import event_source
from aws_lambda_powertools.utilities.data_classes.api_gateway_authorizer_event import (
    APIGatewayAuthorizerEventV2,
    APIGatewayAuthorizerResponseV2,
)
from aws_lambda_powertools.utilities.typing import LambdaContext

from billhub import snapstart
from billhub.auth import TokenService, bearer_token, token_service
from billhub.errors import Unauthorized
from billhub.runtime import aws_client, utc_now
from billhub.settings import AuthorizerSettings
from billhub.store.sign_in import SignInChecks

logger = Logger()
settings = AuthorizerSettings.from_environ(os.environ)


@cache
def tokens() -> TokenService:
    return token_service(settings)


@cache
def store() -> SignInChecks:
    return SignInChecks(aws_client("dynamodb"), settings.TABLE_NAME)


# SnapStart: the clients are built before the snapshot; each restored environment reads the keys itself.
snapstart.register(
    before_snapshot=[store, lambda: tokens().prepare(), snapstart.prepare_secrets],
    after_restore=[lambda: tokens().forget()],
)


def _deny(reason: str, event: APIGatewayAuthorizerEventV2) -> dict[str, Any]:
    logger.info("request not authorized", extra={"reason": reason, "route": event.route_arn})
    return APIGatewayAuthorizerResponseV2(authorize=False).asdict()


@logger.inject_lambda_context
@event_source(data_class=APIGatewayAuthorizerEventV2)
def handler(event: APIGatewayAuthorizerEventV2, context: LambdaContext) -> dict[str, Any]:
    try:
        claims = tokens().verify(bearer_token(event.headers.get("authorization")), utc_now())
    except Unauthorized as error:
        return _deny(error.message, event)
    # A valid token outlives its user: a deleted user's tokens stop working at once. One whose deletion
    # has begun still passes, so that DELETE /me again can finish it; every route treats them as gone.
    if not store().user_exists(claims["sub"]):
        return _deny("the token's user no longer exists", event)
    return APIGatewayAuthorizerResponseV2(authorize=True, context={"user_id": claims["sub"]}).asdict()
