"""Register, log in, read or change the caller's profile, and delete the caller."""

from __future__ import annotations

import os
from datetime import timedelta
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from billhub import snapstart, users
from billhub.api import CallerId, Store, bills_table, create_resolver, documented
from billhub.auth import TokenService, token_service
from billhub.runtime import utc_now
from billhub.settings import AuthSettings

logger = Logger()
app = create_resolver()
settings = AuthSettings.from_environ(os.environ)
login_limits = users.LoginLimits(
    per_account=settings.LOGIN_MAX_FAILURES_PER_ACCOUNT,
    per_source=settings.LOGIN_MAX_FAILURES_PER_SOURCE,
    window=timedelta(seconds=settings.LOGIN_FAILURE_WINDOW_SECONDS),
)


@cache
def tokens() -> TokenService:
    return token_service(settings)


# SnapStart: the clients are built (and email-validator imported) before the snapshot; each restored
# environment reads the keys itself.
snapstart.register(
    before_snapshot=[bills_table, lambda: tokens().prepare(), snapstart.prepare_secrets, users.load_email_validator],
    after_restore=[lambda: tokens().forget()],
)


@app.post(
    "/auth/register",
    summary="Register a new user",
    tags=["auth"],
    responses=documented(201, 400, 409, 413, 415, description="The user was created."),
)
def register(store: Store, request: users.Credentials) -> tuple[users.Registered, int]:
    return users.register(store.users, request, utc_now()), 201


@app.post(
    "/auth/login",
    summary="Log in for a bearer access token",
    tags=["auth"],
    responses=documented(200, 400, 401, 413, 415, 429),
)
def login(store: Store, request: users.Credentials) -> users.AccessToken:
    # The address API Gateway saw the connection come from; client-set headers are not trusted for it.
    source_ip = app.current_event.request_context.http.source_ip
    return users.login(store, tokens(), request, source_ip, utc_now(), login_limits)


@app.get("/me", summary="The caller's profile", tags=["profile"], responses=documented(200, 404))
def get_me(store: Store, user_id: CallerId) -> users.Profile:
    return users.get_profile(store.users, user_id)


@app.patch(
    "/me",
    summary="Change the caller's preferences",
    tags=["profile"],
    responses=documented(200, 400, 404, 409, 413, 415),
)
def patch_me(store: Store, user_id: CallerId, change: users.ProfileChange) -> users.Profile:
    return users.change_profile(store, user_id, change, utc_now())


@app.delete(
    "/me",
    summary="Delete the caller, every linked account, every bill and everything else of theirs",
    tags=["profile"],
    responses=documented(
        204,
        400,
        401,
        413,
        415,
        429,
        503,
        description="Deleted: the caller's tokens are refused from now on (also when already deleted).",
    ),
)
def delete_me(store: Store, user_id: CallerId, request: users.DeletionRequest) -> Response[None]:
    source_ip = app.current_event.request_context.http.source_ip
    users.delete_me(store, user_id, request, source_ip, utc_now(), login_limits)
    return Response(status_code=204)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
