"""Providers, linking provider accounts (with credentials or through OAuth2), repairing and listing them."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from functools import cache
from typing import TYPE_CHECKING, Annotated, Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponseContentModel, OpenAPIResponseContentSchema
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from billhub import accounts, snapstart
from billhub.api import CallerId, ProviderPath, Store, bills_table, create_resolver, documented
from billhub.auth import key_ring_from_secret, signing_key_from_secret
from billhub.credentials import CredentialVault
from billhub.errors import ServiceError
from billhub.idempotency import IdempotencyKey, IdempotentRequest, IdempotentRoutes
from billhub.oauth import OAuthStates, PendingLink
from billhub.queue import FetchQueue
from billhub.ratelimit import ProviderRateLimiter
from billhub.runtime import aws_client, utc_now
from billhub.settings import LinkSettings
from billhub.store.service_records import RequestBudgets

if TYPE_CHECKING:
    from billhub.providers.http import RetryPolicy
    from billhub.providers.session import ProviderConnector, ProviderDirectory

logger = Logger()
app = create_resolver()
settings = LinkSettings.from_environ(os.environ)
# Each provider step of a link (verify; or exchange the code, then verify) fits in this, so even the
# OAuth callback's two steps answer well inside the function's 15 s timeout.
LINK_DEADLINE_SECONDS = 6.0
# Long enough to ride out a throttled lease's retry (botocore's backoff is up to 1 s, then 2 s) and the
# fetchers' lanes at their limit, short enough to leave the provider's calls most of the deadline.
LINK_BUDGET_WAIT_SECONDS = 2.5
AccountIdPath = Annotated[str, Path(pattern=r"^[a-f0-9]{32}$")]
OAUTH_VALUE = r"^[\x21-\x7e]+$"  # printable ASCII without spaces, as accounts.OAuthCallback takes it


@cache
def queue() -> FetchQueue:
    return FetchQueue(aws_client("sqs"), settings.FETCH_QUEUE_URL, settings.FETCH_QUEUE_URLS)


@cache
def vault() -> CredentialVault:
    return CredentialVault(aws_client("kms"), settings.CREDENTIALS_KEY_ID)


@cache
def states() -> OAuthStates:
    # The access tokens' key ring: a state names its key, and verifies with the previous one after a rotation.
    return OAuthStates(
        bills_table().oauth_states,
        key_ring_from_secret(settings),
        settings.JWT_ISSUER,
        settings.JWT_AUDIENCE,
        settings.JWT_PREVIOUS_KEY_GRACE_SECONDS,
    )


# The provider plumbing (httpx, tenacity) is imported by the routes that reach a provider, not at cold
# start: listing providers and accounts, the most frequent calls, never need it.
def directory() -> ProviderDirectory:
    from billhub.providers.session import ProviderDirectory

    return ProviderDirectory.configured(
        settings.PROVIDER_ENDPOINTS, settings.PROVIDER_CLIENTS_SECRET_ARN, settings.PROVIDER_CLIENTS_MAX_AGE_SECONDS
    )


@cache
def link_retry_policy() -> RetryPolicy:
    from billhub.providers.http import RetryPolicy

    # The user is waiting: one quick retry at most, and a provider slower than this is verified later.
    return RetryPolicy(attempts=2, initial_wait=0.1, max_wait=0.5, max_retry_after=1.0, read_timeout=4.0)


@cache
def idempotency() -> IdempotentRoutes:
    # Link bodies carry credentials: their fingerprints are keyed, never plain hashes of a password.
    return IdempotentRoutes(aws_client("dynamodb"), settings.TABLE_NAME, signing_key_from_secret(settings))


@cache
def rate_limiter() -> ProviderRateLimiter:
    # The same budget the fetchers share; a user waits at most LINK_BUDGET_WAIT_SECONDS for a slot, else the
    # link is pending (an OAuth callback, whose code is single-use, answers 503).
    budgets = RequestBudgets(aws_client("dynamodb"), settings.TABLE_NAME)
    return ProviderRateLimiter.for_registered_providers(
        budgets, LINK_BUDGET_WAIT_SECONDS, agreed_limits=settings.PROVIDER_RATE_LIMITS
    )


def _import_provider_plumbing() -> None:
    import httpx  # noqa: F401

    import billhub.pages
    import billhub.providers.session  # noqa: F401


# SnapStart: what the first link or OAuth step would import and build is in the snapshot, the secrets
# (signing keys, provider OAuth clients) are not; no httpx client outlives its request, so none is reopened.
# After a restore the states' key ring forgets its previous key and when it last re-read the keys, and the
# vault any data key it holds (none is made before the snapshot; their ages would be another environment's).
snapstart.register(
    before_snapshot=[
        bills_table,
        queue,
        vault,
        lambda: states().prepare(),
        idempotency,
        rate_limiter,
        link_retry_policy,
        _import_provider_plumbing,
        snapstart.prepare_secrets,
    ],
    after_restore=[lambda: states().forget(), lambda: vault().forget()],
)


def with_provider[Result](work: Callable[[ProviderConnector], Awaitable[Result]]) -> Result:
    import httpx

    from billhub.providers.http import tls_context
    from billhub.providers.session import ProviderConnector

    async def run() -> Result:
        # The environment's one TLS context: loading the CA bundle per client cost ~20 ms a link.
        async with httpx.AsyncClient(verify=tls_context()) as client:
            connector = ProviderConnector(
                client, directory(), utc_now, link_retry_policy(), LINK_DEADLINE_SECONDS, rate_limiter()
            )
            return await work(connector)

    return asyncio.run(run())


@app.get(
    "/providers", summary="The providers an account can be linked at", tags=["accounts"], responses=documented(200)
)
def list_providers() -> accounts.ProviderList:
    return accounts.list_providers()


@app.post(
    "/accounts/link",
    summary="Link a provider account with its credentials",
    tags=["accounts"],
    # 404 for a caller whose deletion of themselves has begun.
    responses=documented(201, 400, 404, 409, 413, 415, 503, description="The account was linked."),
)
def link(
    store: Store, user_id: CallerId, request: accounts.LinkRequest, idempotency_key: IdempotencyKey = None
) -> Response[accounts.AccountView]:
    return idempotency().respond(
        IdempotentRequest(user_id, "POST /accounts/link", idempotency_key, request),
        lambda: with_provider(
            lambda connector: accounts.link_account(store, queue(), vault(), connector, user_id, request, utc_now())
        ),
        accounts.AccountView,
        201,
        app.lambda_context,
    )


@app.get("/accounts", summary="The caller's linked accounts", tags=["accounts"], responses=documented(200))
def list_accounts(store: Store, user_id: CallerId) -> accounts.AccountList:
    return accounts.list_accounts(store, user_id)


@app.put(
    "/accounts/<account_id>/credentials",
    summary="Replace a linked account's credentials",
    tags=["accounts"],
    responses=documented(200, 400, 404, 409, 413, 415, 503),
)
def replace_credentials(
    store: Store, user_id: CallerId, account_id: AccountIdPath, request: accounts.CredentialsRequest
) -> accounts.AccountView:
    return with_provider(
        lambda connector: accounts.replace_credentials(
            store, queue(), vault(), connector, user_id, account_id, request, utc_now()
        )
    )


@app.get(
    "/accounts/oauth/<provider>/start",
    summary="Start linking (or repairing) an account through the provider's OAuth2 sign-in",
    tags=["accounts"],
    responses=documented(200, 400, 404, 503),
)
def oauth_start(
    store: Store,
    user_id: CallerId,
    provider: ProviderPath,
    account_id: Annotated[str | None, Query(pattern=r"^[a-f0-9]{32}$")] = None,
    nickname: Annotated[accounts.Nickname | None, Query()] = None,
) -> accounts.OAuthStart:
    link = PendingLink(
        user_id=user_id,
        provider=provider,
        redirect_uri=settings.oauth_callback_url(provider),
        account_id=account_id,
        nickname=nickname,
    )
    return accounts.start_oauth(store, states(), directory(), link, utc_now())


# A browser's answer is a page, an API client's the account (both documented here with their status).
_CALLBACK_ANSWER: dict[str, OpenAPIResponseContentModel | OpenAPIResponseContentSchema] = {
    content_types.APPLICATION_JSON: {"model": accounts.AccountView},
    "text/html": {"schema": {"type": "string", "description": "A page saying what happened and what to do next."}},
}


@app.get(
    "/accounts/oauth/<provider>/callback",
    summary="Where the provider sends the browser back after its OAuth2 sign-in",
    description=(
        "A caller whose `Accept` header prefers `text/html` to `application/json` (a browser) gets a small "
        "HTML page instead of JSON, with the same status: linked, reconnected, access denied, link request "
        "expired, or another error, and what to do next."
    ),
    tags=["accounts"],
    responses={
        **documented(200, 400, 404, 409, 503),
        200: {"description": "An existing account was repaired.", "content": _CALLBACK_ANSWER},
        201: {"description": "A new account was linked.", "content": _CALLBACK_ANSWER},
    },
)
def oauth_callback(
    store: Store,
    provider: ProviderPath,
    state: Annotated[str, Query(min_length=1, max_length=2048, pattern=OAUTH_VALUE)],
    code: Annotated[str | None, Query(min_length=1, max_length=2048, pattern=OAUTH_VALUE)] = None,
    error: Annotated[str | None, Query(max_length=128, pattern=r"^[\x20-\x7e]*$")] = None,
) -> Response[str]:
    from billhub import pages

    browser = pages.prefers_html(app.current_event.headers.get("accept"))
    callback = accounts.OAuthCallback(state=state, code=code, error=error)
    try:
        view, created = with_provider(
            lambda connector: accounts.complete_oauth(
                store, queue(), vault(), states(), connector, provider, callback, utc_now()
            )
        )
    except ServiceError as failure:
        if browser:
            return pages.oauth_failed(provider, failure.status, failure.code, failure.message)
        raise
    if browser:
        return pages.oauth_linked(provider, view, created)
    return Response(
        status_code=201 if created else 200, content_type=content_types.APPLICATION_JSON, body=view.model_dump_json()
    )


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
