"""SnapStart's two moments in the life of a function the template snapshots (docs/decisions.md).

Lambda runs such a function's init once, when a version is published, snapshots the execution
environment, and starts every later environment of that version from the snapshot. What init leaves
in memory is therefore shared by environments that run at once, maybe days later:

- before the snapshot, the work worth sharing is done once: the boto3 clients the function uses, the
  modules its first request would import, its settings (read at import already);
- after each restore, what must not be shared is dropped: the state of ``random`` (seeded at import,
  so every restored environment would draw the same jitter), and every cache whose expiry was reckoned
  in another environment or on a clock that does not carry over: Powertools Parameters' secrets (the
  JWT signing key, the provider OAuth clients), each function's own (given to ``register``).

No secret is read before the snapshot: secrets are fetched by the first request of each restored
environment. AWS credentials need nothing: under SnapStart the runtime hands boto3 container
credentials, which it refreshes when they expire (AWS, "Using SnapStart with AWS SDKs").

``snapshot_restore_py`` comes with Lambda's Python runtimes (the layer does not ship it); the runtime
calls the hooks only for a SnapStart version, and the local worker (``localcloud.worker``) calls them
for the functions whose template says ``SnapStart``.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable, Iterable

from snapshot_restore_py import register_after_restore, register_before_snapshot

Hook = Callable[[], object]


def _run(hooks: tuple[Hook, ...]) -> None:
    for hook in hooks:
        hook()


def forget_shared_state() -> None:
    """What every restored environment must make its own, whichever function it runs."""
    # Seeded from os.urandom when ``random`` was imported, i.e. once for all restored environments.
    random.seed()
    # Powertools Parameters' default providers (``parameters.get_secret``): each value expires at a
    # datetime computed where it was fetched. The providers, and their boto3 clients, are kept. Not
    # imported yet: nothing is cached, and importing it here would cost the restore.
    constants = sys.modules.get("aws_lambda_powertools.utilities.parameters.constants")
    for provider in getattr(constants, "DEFAULT_PROVIDERS", {}).values():
        provider.clear_cache()
    # The shared TLS context, if one was built before the snapshot: each environment builds its own.
    http = sys.modules.get("billhub.providers.http")
    if http is not None:
        http.tls_context.cache_clear()


def prepare_secrets() -> None:
    """Powertools' default Secrets Manager provider (behind ``parameters.get_secret``) and its client,
    built before the snapshot with this service's client settings rather than at the first request."""
    from aws_lambda_powertools.utilities import parameters
    from aws_lambda_powertools.utilities.parameters.constants import DEFAULT_PROVIDERS

    from billhub.runtime import aws_client

    if "secrets" not in DEFAULT_PROVIDERS:
        DEFAULT_PROVIDERS["secrets"] = parameters.SecretsProvider(boto3_client=aws_client("secretsmanager"))


def register(before_snapshot: Iterable[Hook] = (), after_restore: Iterable[Hook] = ()) -> None:
    """A handler's hooks: ``before_snapshot`` run in their order before the snapshot, and after each
    restore ``forget_shared_state`` then ``after_restore`` in their order. Call it once, at import."""
    register_before_snapshot(_run, tuple(before_snapshot))
    register_after_restore(forget_shared_state)
    register_after_restore(_run, tuple(after_restore))
