"""Deleting a linked account, its credentials and its bills."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from billhub.api import create_resolver, not_implemented

logger = Logger()
app = create_resolver()


@app.delete("/accounts/<account_id>")
def delete_account(account_id: str) -> None:
    # Transactional deletion (mark deleting, remove bills in chunks, destroy credentials) comes with
    # the consistency work; until then the route exists and says so.
    raise not_implemented("Deleting a linked account")


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
