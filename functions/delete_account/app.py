"""Deleting a linked account, its credentials and its bills."""

from __future__ import annotations

import os
from typing import Annotated, Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Path
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from billhub import deletion
from billhub.api import CallerId, Store, create_resolver, documented
from billhub.runtime import utc_now
from billhub.settings import TableSettings

logger = Logger()
app = create_resolver()
settings = TableSettings.from_environ(os.environ)
AccountIdPath = Annotated[str, Path(pattern=r"^[a-f0-9]{32}$")]


@app.delete(
    "/accounts/<account_id>",
    summary="Unlink an account and delete its credentials and bills",
    tags=["accounts"],
    responses=documented(204, 404, 409, description="Deleted (also when it was already gone)."),
)
def delete_account(store: Store, user_id: CallerId, account_id: AccountIdPath) -> Response[None]:
    deletion.delete_account(store, user_id, account_id, utc_now())
    return Response(status_code=204)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
