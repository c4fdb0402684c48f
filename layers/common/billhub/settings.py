"""Each function's configuration, read once from its environment into a typed, validated model."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Annotated, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    HttpUrl,
    Json,
    PositiveInt,
    StringConstraints,
)


class _EnvSettings(BaseModel):
    # Each class's validator is built when it is first used: a function reads one of these classes,
    # and building all of them at import would cost every cold start.
    model_config = ConfigDict(frozen=True, extra="ignore", defer_build=True)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Self:
        return cls.model_validate(dict(environ))


def _true_or_false(value: object) -> object:
    """A template's boolean parameter, "true" or "false" exactly (pydantic would take "1", "yes", "on"...)."""
    if isinstance(value, str) and value not in ("true", "false"):
        raise ValueError('must be "true" or "false"')
    return value == "true" if isinstance(value, str) else value


class TableSettings(_EnvSettings):
    TABLE_NAME: str = Field(min_length=3)


class JwtSettings(_EnvSettings):
    JWT_SECRET_ARN: str
    JWT_ISSUER: str
    JWT_AUDIENCE: str
    ACCESS_TOKEN_TTL_SECONDS: int = Field(default=3600, ge=60, le=86400)
    # The signing key is cached this long, so a rotated key reaches every warm Lambda within it.
    JWT_SECRET_MAX_AGE_SECONDS: int = Field(default=300, ge=0)
    # After a rotation, tokens the previous key signed stay valid this long after they were issued
    # (the default, the token lifetime, logs nobody out early); see "Rotating the signing key".
    JWT_PREVIOUS_KEY_GRACE_SECONDS: int = Field(default=3600, ge=0, le=86400)


class LoginThrottleSettings(_EnvSettings):
    # Failed logins allowed per window, per email and per source IP; then 429 until the window ends.
    LOGIN_MAX_FAILURES_PER_ACCOUNT: int = Field(default=5, ge=1)
    LOGIN_MAX_FAILURES_PER_SOURCE: int = Field(default=20, ge=1)
    LOGIN_FAILURE_WINDOW_SECONDS: int = Field(default=900, ge=1)


class AuthSettings(TableSettings, JwtSettings, LoginThrottleSettings):
    pass


class AuthorizerSettings(TableSettings, JwtSettings):
    pass


EndpointName = Literal["api", "token", "authorize"]


def _absolute_url(value: HttpUrl) -> str:
    if value.username or value.password:
        # Credentials belong in the provider clients secret, never in a URL that is logged and echoed.
        raise ValueError("a provider endpoint URL may not carry a user name or password")
    return str(value)


EndpointUrl = Annotated[HttpUrl, AfterValidator(_absolute_url)]


class ProviderEndpoints(BaseModel):
    """Where one provider is: its API's base URL, and its OAuth2 endpoints when its auth uses them."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    api: EndpointUrl | None = None
    token: EndpointUrl | None = None
    authorize: EndpointUrl | None = None

    def url(self, endpoint: EndpointName) -> str | None:
        value = getattr(self, endpoint)
        return None if value is None else str(value)


def _every_registered_provider_reachable(
    configured: dict[str, ProviderEndpoints],
) -> dict[str, ProviderEndpoints]:
    """Each registered provider has every endpoint its adapter needs, and no unknown provider is named."""
    # Imported here, not at module level: only the functions that call providers build these settings.
    from billhub.providers import REGISTRY

    problems = [f"'{name}' is not a registered provider" for name in sorted(configured.keys() - REGISTRY.keys())]
    for name, adapter in REGISTRY.items():
        endpoints = configured.get(name)
        missing = [key for key in adapter.endpoints_needed() if endpoints is None or getattr(endpoints, key) is None]
        if missing:
            needs = ", ".join(f"'{key}'" for key in missing)
            problems.append(f"provider '{name}' ({adapter.auth_type()}) has no {needs} endpoint")
    if problems:
        raise ValueError("; ".join(problems))
    return configured


ProviderName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]{1,31}$")]


class RateLimitSettings(_EnvSettings):
    # Requests per second per provider where they differ from the adapter's published limit (JSON): what
    # the fetchers and linkers hold each provider to, and what the planner admits scheduled refreshes by.
    PROVIDER_RATE_LIMITS: Json[dict[str, PositiveInt]] = Field(default_factory=dict)


class ProviderSettings(RateLimitSettings):
    # Never echo the input in an error: the environment a function validates holds AWS credentials.
    model_config = ConfigDict(hide_input_in_errors=True)

    # Where each provider is, as JSON: {"<provider>": {"api": URL, "token": URL, "authorize": URL}}, each
    # provider with the endpoints its adapter needs (ProviderAdapter.endpoints_needed).
    PROVIDER_ENDPOINTS: Json[
        Annotated[dict[ProviderName, ProviderEndpoints], AfterValidator(_every_registered_provider_reachable)]
    ]
    CREDENTIALS_KEY_ID: str
    # The service's OAuth2 client registrations at the providers that need one.
    PROVIDER_CLIENTS_SECRET_ARN: str
    PROVIDER_CLIENTS_MAX_AGE_SECONDS: int = Field(default=300, ge=0)


def _public_base_url(value: HttpUrl) -> str:
    # The base is joined with a route ("<base>/accounts/oauth/<provider>/callback"): a query or fragment
    # would end up in the middle of the URL, and a user name or password would be sent to every provider.
    if value.username or value.password:
        raise ValueError("the public base URL may not carry a user name or password")
    if value.query is not None or value.fragment is not None:
        raise ValueError("the public base URL may not carry a query or a fragment")
    return str(value).rstrip("/")


# Where clients reach this API (a custom domain with its base path, or CloudFront, or the execute-api
# URL), without a trailing slash: https://api.example.com or https://api.example.com/v1.
PublicBaseUrl = Annotated[HttpUrl, AfterValidator(_public_base_url)]


class FetchLaneSettings(_EnvSettings):
    # The default fetch lane: requests that name no provider, or one without a lane of its own.
    FETCH_QUEUE_URL: str
    # Each provider's fetch lane, as JSON ({"<provider>": URL}); an environment from before the lanes has
    # none, and every fetch then goes to FETCH_QUEUE_URL.
    FETCH_QUEUE_URLS: Json[dict[ProviderName, str]] = Field(default_factory=dict)


class LinkSettings(TableSettings, ProviderSettings, JwtSettings, FetchLaneSettings):
    # A linked (or repaired) account's first fetch is enqueued at once (FetchLaneSettings).
    # The OAuth2 redirect_uri registered at each provider is <PUBLIC_BASE_URL>/accounts/oauth/<provider>/callback:
    # configured, not read from the request, which behind a custom domain or CloudFront names another host
    # or misses the base path.
    PUBLIC_BASE_URL: PublicBaseUrl

    def oauth_callback_url(self, provider: str) -> str:
        return f"{self.PUBLIC_BASE_URL}/accounts/oauth/{provider}/callback"


class PlannerSettings(TableSettings, FetchLaneSettings, RateLimitSettings):
    # The scheduled run puts one unit of work per refresh shard here; the planner's shard workers take them.
    PLAN_QUEUE_URL: str


class RefreshSettings(TableSettings, FetchLaneSettings):
    # A user starts at most one POST /bills/refresh per this many seconds; 0 turns the limit off.
    MANUAL_REFRESH_MIN_INTERVAL_SECONDS: int = Field(default=300, ge=0)


class EventBusSettings(_EnvSettings):
    # The bus the users' events go to (billhub.event_bus), routed from there to the webhook deliveries.
    EVENT_BUS_NAME: str = Field(min_length=1)


class ReminderSettings(TableSettings, EventBusSettings):
    # The address the daily reminders are sent from: an SES identity of the account (the template's
    # ReminderSender, verified there as an AWS::SES::EmailIdentity).
    REMINDER_SENDER: str = Field(pattern=r"^[^@\s]+@[^@\s]+$")


class FetchSettings(TableSettings, ProviderSettings, FetchLaneSettings, EventBusSettings):
    # Deferred fetches go back to their provider's lane (FetchLaneSettings) as new, delayed messages.
    ALERTS_TOPIC_ARN: str
    FETCH_MAX_RECEIVE_COUNT: int = Field(ge=1)
    PROVIDER_READ_TIMEOUT_SECONDS: float = Field(default=5.0, gt=0, le=20)
    # A provider failing this many fetches in a row has its circuit opened for this long. The circuit's
    # defaults: billhub.circuit.DEFAULT_CONFIG reads them here, the template's CircuitRecoverySeconds
    # is checked against them (tests/unit/test_circuit_parity.py).
    CIRCUIT_FAILURE_THRESHOLD: int = Field(default=5, ge=1)
    CIRCUIT_RECOVERY_SECONDS: int = Field(default=30, ge=1)


class InsightsSettings(TableSettings):
    # GET /insights calls a bill unusual above this many times the median of its account's previous
    # bills. Over the sandbox's accounts, ordinary bills (seasonal swings included) stay below 1.73x and
    # the planted anomalies (3x a usual bill) are at least 2.00x: see docs/decisions.md.
    UNUSUAL_BILL_THRESHOLD: Decimal = Field(default=Decimal("1.8"), ge=1, le=10)


class WebhookSettings(TableSettings, EventBusSettings):
    # The vault's key: each webhook's signing secrets are stored encrypted under a data key of it.
    CREDENTIALS_KEY_ID: str
    # EVENT_BUS_NAME: where POST /webhooks/{webhook_id}/test puts its event.
    # The template's WebhookAllowLoopback: "true" lets webhooks point at http(s) on loopback (the local
    # cloud), and nothing else that is not public.
    WEBHOOK_ALLOW_LOOPBACK: Annotated[bool, BeforeValidator(_true_or_false)] = False


def _comma_list(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",")]
    return value


class DeliverySettings(TableSettings):
    CREDENTIALS_KEY_ID: str
    # Failed attempts' retries go back on the delivery queue, delayed.
    DELIVERY_QUEUE_URL: str
    # "true": webhooks may point at loopback addresses, over http too (the local cloud); never in AWS.
    WEBHOOK_ALLOW_LOOPBACK: Annotated[bool, BeforeValidator(_true_or_false)] = False
    # Seconds before each retry of a failed delivery ("5,300,1800,..."; each lengthened by up to 20%
    # jitter); after the last, the delivery is failed. The local cloud shortens it.
    WEBHOOK_RETRY_DELAYS_SECONDS: Annotated[tuple[PositiveInt, ...], BeforeValidator(_comma_list)] = Field(
        default=(5, 300, 1800, 7200, 18000, 36000, 36000), min_length=1
    )
