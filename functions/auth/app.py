"""Register, log in, and read or change the caller's profile."""

from __future__ import annotations

import os
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from billhub import users
from billhub.api import caller_id, create_resolver
from billhub.auth import TokenService, token_service
from billhub.runtime import aws_client, utc_now
from billhub.settings import AuthSettings
from billhub.store import BillsTable

logger = Logger()
app = create_resolver()
settings = AuthSettings.from_environ(os.environ)


@cache
def store() -> BillsTable:
    return BillsTable(aws_client("dynamodb"), settings.TABLE_NAME)


@cache
def tokens() -> TokenService:
    return token_service(settings)


@app.post("/auth/register")
def register(request: users.Credentials) -> tuple[users.Registered, int]:
    return users.register(store(), request, utc_now()), 201


@app.post("/auth/login")
def login(request: users.Credentials) -> users.AccessToken:
    return users.login(store(), tokens(), request)


@app.get("/me")
def get_me() -> users.Profile:
    return users.get_profile(store(), caller_id(app))


@app.patch("/me")
def patch_me(change: users.ProfileChange) -> users.Profile:
    return users.change_profile(store(), caller_id(app), change, utc_now())


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
