"""Idempotent POSTs: a request sent again with the same ``Idempotency-Key`` gets the first answer back.

Powertools Idempotency, with its DynamoDB persistence layer on the service's single table. A record is
keyed by the caller, the route and the key (so two users' keys never meet), and holds a fingerprint of
the request body (the same key with another body is refused) and, once the work succeeded, its answer:

    IDEMPOTENCY#<uid>  <route>#<sha256 of user, route and key>   status INPROGRESS | COMPLETED,
                                                                   response (the answer's JSON),
                                                                   payload_hash, in_progress_expires_at,
                                                                   expires_at (table TTL, 24 h)

Each caller's records have a partition of their own, outside the ``USER#<uid>`` collection the store
queries: one shared partition would take every keyed POST of every user, and with the table's local
secondary index an item collection is capped at 10 GB and is never split for heat.

Only successes are remembered: when the work raises, Powertools deletes the record, so a corrected retry
with the same key runs. A record in progress blocks a retry only until the first attempt's Lambda
invocation would have timed out (``in_progress_expires_at``), so a crashed attempt does not hold the key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.openapi.params import Header
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyInconsistentStateError,
    IdempotencyPersistenceLayerError,
    IdempotencyValidationError,
)
from aws_lambda_powertools.utilities.idempotency.serialization.pydantic import PydanticSerializer
from pydantic import BaseModel

from billhub import keys
from billhub.errors import ServiceError

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import DataRecord
    from aws_lambda_powertools.utilities.typing import LambdaContext
    from mypy_boto3_dynamodb import DynamoDBClient

logger = Logger(child=True)

IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
# Long enough for any client's retries (an app retrying after a night offline included), as Stripe
# keeps its keys; short enough that a remembered answer (an account view, a job id) does not linger.
RECORD_TTL = timedelta(hours=24)
# When to try again after a 409 (first attempt still running) or a 503: a refresh answers in well under a
# second and a link mostly within one provider call, so a couple of seconds mostly finds the answer ready.
RETRY_AFTER_SECONDS = 2
# Printable ASCII without spaces: a UUID, a ULID, a base64url token all fit.
_KEY_PATTERN = re.compile(r"[\x21-\x7e]{1,255}")
_FINGERPRINT_CONTEXT = b"billhub idempotency request fingerprint v1"

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias=IDEMPOTENCY_KEY_HEADER,
        description=(
            "Optional, 1 to 255 printable ASCII characters without spaces (a UUID, say). A request sent again "
            "with the same key within 24 hours gets the first answer back, with `Idempotent-Replayed: true`, "
            "and does no second piece of work. Only successful answers are remembered."
        ),
        # Documented, not validated here: ``respond`` refuses another key with 400 invalid_idempotency_key.
        json_schema_extra={"pattern": f"^{_KEY_PATTERN.pattern}$"},
    ),
]


class InvalidIdempotencyKey(ServiceError):
    status = 400
    code = "invalid_idempotency_key"


class IdempotencyKeyReused(ServiceError):
    status = 422
    code = "idempotency_key_reused"


class IdempotencyInProgress(ServiceError):
    status = 409
    code = "idempotency_in_progress"


class IdempotencyUnavailable(ServiceError):
    status = 503
    code = "idempotency_unavailable"


@dataclass(frozen=True)
class _Replayed[Model: BaseModel]:
    """An answer remembered from an earlier request with the key, as opposed to one just worked out."""

    answer: Model


def _replayed(response: Any, idempotent_data: DataRecord) -> _Replayed[Any]:
    """Powertools' ``response_hook``: called only when a completed record answers, never for a fresh run."""
    return _Replayed(response)


@dataclass(frozen=True)
class IdempotentRequest:
    """One request to an idempotent route: who sent it, where, with which key (``None``: no key) and body."""

    user_id: str
    route: str
    key: str | None
    body: BaseModel


class _CallerPartitions(DynamoDBPersistenceLayer):
    """Powertools' DynamoDB persistence layer with each caller's records in a partition of their own.

    Powertools names a record ``<key_prefix>#<digest>`` and, on a table with a sort key, files it under
    one fixed partition key. The key prefix here is ``<user_id>#<route>``, which this layer files as
    PK ``IDEMPOTENCY#<user_id>``, SK ``<route>#<digest>``.
    """

    def _get_key(self, idempotency_key: str) -> dict[str, Any]:
        pk, sk = keys.idempotency_record_key(idempotency_key)
        return {"PK": {"S": pk}, "SK": {"S": sk}}


class IdempotentRoutes:
    """Runs a route's domain call at most once per caller, route and ``Idempotency-Key``.

    ``fingerprint_key`` keys the fingerprint of request bodies that carry secrets (credentials): a
    plain hash of a password in the table could be guessed offline. Without it bodies are hashed as is.
    When that key changes, a retry of an older request is refused as another body (422), never rerun.
    """

    def __init__(
        self,
        client: DynamoDBClient,
        table_name: str,
        fingerprint_key: Callable[[], str] | None = None,
    ) -> None:
        self._persistence = _CallerPartitions(
            table_name=table_name,
            key_attr="PK",
            sort_key_attr="SK",
            expiry_attr="expires_at",
            in_progress_expiry_attr="in_progress_expires_at",
            status_attr="status",
            data_attr="response",
            validation_key_attr="payload_hash",
            boto3_client=client,
        )
        self._config = IdempotencyConfig(
            event_key_jmespath="scope",
            payload_validation_jmespath="fingerprint",
            raise_on_no_idempotency_key=True,
            expires_after_seconds=int(RECORD_TTL.total_seconds()),
            hash_function="sha256",
            response_hook=_replayed,
        )
        self._fingerprint_key = fingerprint_key

    def respond[Model: BaseModel](
        self,
        request: IdempotentRequest,
        work: Callable[[], Model],
        model: type[Model],
        status: int,
        context: LambdaContext,
    ) -> Response[Model]:
        """``work()``'s answer with ``status``; for a key already answered, that first answer, replayed.

        Raises ``InvalidIdempotencyKey`` (400), ``IdempotencyKeyReused`` (422: another body),
        ``IdempotencyInProgress`` (409: the first attempt is still running), ``IdempotencyUnavailable``
        (503: the records could not be read or written), or whatever ``work`` raises (remembering nothing).
        """
        if request.key is None:
            return _json(status, work())
        if not _KEY_PATTERN.fullmatch(request.key):
            raise InvalidIdempotencyKey(
                f"The {IDEMPOTENCY_KEY_HEADER} header must be 1 to 255 printable ASCII characters without spaces."
            )
        key_prefix = keys.idempotency_key_prefix(request.user_id, request.route)

        def attempt(data: dict[str, Any]) -> Model:  # ``data``: what Powertools keys and fingerprints
            return work()

        once = idempotent_function(
            attempt,
            data_keyword_argument="data",
            persistence_store=self._persistence,
            config=self._config,
            output_serializer=PydanticSerializer(model),
            key_prefix=key_prefix,
        )
        # Powertools marks a record in progress only until the invocation would time out.
        self._config.register_lambda_context(context)
        data = {
            "scope": {"user_id": request.user_id, "route": request.route, "key": request.key},
            "fingerprint": self._fingerprint(request.body),
        }
        try:
            answer: Model | _Replayed[Model] = once(data=data)
        except IdempotencyValidationError as error:
            raise IdempotencyKeyReused(
                f"This {IDEMPOTENCY_KEY_HEADER} was already used with a different request; "
                "send a new key for a new request."
            ) from error
        except IdempotencyAlreadyInProgressError as error:
            raise IdempotencyInProgress(
                f"A request with this {IDEMPOTENCY_KEY_HEADER} is still being processed; "
                "retry shortly to get its answer.",
                retry_after=RETRY_AFTER_SECONDS,
            ) from error
        except (IdempotencyPersistenceLayerError, IdempotencyInconsistentStateError) as error:
            logger.exception("idempotency records unavailable", extra={"route": request.route})
            raise IdempotencyUnavailable(
                "The record of this request's key could not be read or written; retry shortly with the same key.",
                retry_after=RETRY_AFTER_SECONDS,
            ) from error
        if isinstance(answer, _Replayed):
            return _json(status, answer.answer, replayed=True)
        return _json(status, answer)

    def _fingerprint(self, body: BaseModel) -> str:
        canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        if self._fingerprint_key is None:
            return canonical
        key = hmac.new(self._fingerprint_key().encode(), _FINGERPRINT_CONTEXT, hashlib.sha256).digest()
        return hmac.new(key, canonical.encode(), hashlib.sha256).hexdigest()


def _json[Model: BaseModel](status: int, body: Model, replayed: bool = False) -> Response[Model]:
    return Response(
        status_code=status,
        content_type=content_types.APPLICATION_JSON,
        body=body,
        headers={REPLAYED_HEADER: "true"} if replayed else None,
    )
