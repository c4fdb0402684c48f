"""SnapStart's hooks: the local worker runs them as Lambda's runtime does, and what they reset is reset."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from billhub import snapstart
from billhub.auth import KeyRing, key_id
from localcloud.runtime import FunctionRuntime
from localcloud.template import FunctionSpec

KEY = "k" * 64

# A function that registers hooks as a handler does, and tells what ran before its first event.
HOOKED_HANDLER = """
from snapshot_restore_py import register_after_restore, register_before_snapshot

from billhub import snapstart

ran = []
register_before_snapshot(ran.append, "first registered, run last before the snapshot")
snapstart.register(
    before_snapshot=[lambda: ran.append("handler's before")], after_restore=[lambda: ran.append("handler's after")]
)
register_after_restore(ran.append, "last registered, run last after the restore")

def handler(event, context):
    return ran
"""


@pytest.mark.parametrize("snapstart_on", [True, False])
def test_the_local_worker_runs_the_hooks_between_import_and_the_first_event_for_snapstart_only(
    tmp_path: Path, snapstart_on: bool
) -> None:
    code = tmp_path / "hooked"
    code.mkdir()
    (code / "app.py").write_text(HOOKED_HANDLER)
    spec = FunctionSpec(
        "Hooked", code, "app", "handler", timeout=30, memory_mb=128, environment={}, snapstart=snapstart_on
    )
    runtime = FunctionRuntime(spec, environment={}, log_dir=tmp_path)
    try:
        ran = runtime.invoke({})
        again = runtime.invoke({})  # a warm invocation: the hooks ran once, at the cold start
    finally:
        runtime.stop()
    expected = (
        [
            # Before the snapshot: the reverse of the order of registration, as Lambda's runtime runs them.
            "handler's before",
            "first registered, run last before the snapshot",
            # After the restore: in the order of registration.
            "handler's after",
            "last registered, run last after the restore",
        ]
        if snapstart_on
        else []
    )
    assert ran == again == expected


def test_a_restored_key_ring_may_reread_the_keys_at_once_whatever_the_snapshot_saw() -> None:
    fetched: list[bool] = []
    clock = [100.0]
    forgotten: list[bool] = []

    def current(force: bool) -> str:
        fetched.append(force)
        return KEY

    ring = KeyRing(
        current,
        lambda _: None,
        refetch_interval=10,
        monotonic=lambda: clock[0],
        forget=lambda: forgotten.append(True),
    )
    # The environment that is snapshotted re-read the keys for an unknown kid: the next re-read waits 10 s.
    assert ring.find("made-up") is None
    assert ring.find("made-up-too") is None
    assert fetched.count(True) == 1
    # A restored environment's monotonic clock may stand anywhere; after the restore it re-reads at once.
    ring.forget()
    assert ring.find(key_id("n" * 64)) is None
    assert fetched.count(True) == 2
    assert forgotten == [True]


def test_after_a_restore_random_draws_differ_between_environments_of_one_snapshot() -> None:
    draws = []
    for _ in range(2):  # two environments restored from one snapshot: the same state of random in each
        random.seed(1234)
        snapstart.forget_shared_state()
        draws.append([random.random() for _ in range(4)])
    assert draws[0] != draws[1]
    random.seed(1234)
    without_the_hook = [random.random() for _ in range(4)]
    random.seed(1234)
    assert without_the_hook == [random.random() for _ in range(4)]


def test_a_restored_environment_builds_its_own_tls_context() -> None:
    from billhub.providers.http import tls_context

    # Given a TLS context built before the snapshot, and shared by every client while warm
    before = tls_context()
    assert tls_context() is before
    # When the environment is restored
    snapstart.forget_shared_state()
    # Then its clients get a context of its own, built after the restore
    assert tls_context() is not before
