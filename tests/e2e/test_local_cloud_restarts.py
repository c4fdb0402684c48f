"""`make run` keeps its state across restarts, stops cleanly on Ctrl-C, and `--fresh` (`make run
FRESH=1`) starts empty: the whole local cloud through `python -m localcloud`, stopped with signals and
started again on the same ports and data directory, as a developer does."""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from localcloud.cloud import MOTO_STATE, SANDBOX_STATE
from localcloud.demo import DEMO_EMAIL, DEMO_PASSWORD, link_with_oauth
from localcloud.launch import CloudProcess, Stopped
from localcloud.moto_state import STATE_PATH
from tests.e2e.harness import Cloud, wait_until
from tests.e2e.test_local_cloud import E2E_LINKS, refresh_and_wait

# These tests refresh one user several times within seconds.
SETTINGS = {"LOCALCLOUD_PARAMETER_OVERRIDES": json.dumps({"ManualRefreshMinIntervalSeconds": "0"})}


@contextlib.contextmanager
def running(
    workdir: Path, data: Path, like: CloudProcess | None = None, *, fresh: bool = False, **settings: str
) -> Iterator[tuple[CloudProcess, Cloud]]:
    """A local cloud keeping its state in ``data``; on the ports of ``like`` when given (a restart)."""
    workdir.mkdir(parents=True)
    environment = {**SETTINGS, "LOCALCLOUD_DATA_DIR": str(data), **(like.ports if like else {}), **settings}
    process = CloudProcess(workdir, environment, fresh=fresh)
    try:
        yield process, Cloud(process.start())
    finally:
        process.stop(signal.SIGTERM, timeout=30)  # nothing if the test stopped it already


def assert_stopped_cleanly(stopped: Stopped) -> None:
    after = stopped.output.split("stopping...", 1)[-1]
    assert stopped.returncode == 0, stopped.output[-3000:]
    assert "Traceback" not in stopped.output and "ERROR" not in after, after[-3000:]
    assert "stopped in" in after


def link_everything(cloud: Cloud, email: str) -> dict[str, str]:
    """A user with an account at each of the four providers (SparkGrid through OAuth2), refreshed."""
    headers = cloud.new_user(email)
    for provider, (credentials, _) in E2E_LINKS.items():
        linked = cloud.api.post(
            "/accounts/link", headers=headers, json={"provider": provider, "credentials": credentials}
        )
        assert linked.status_code == 201, linked.text
    assert link_with_oauth(cloud.api, headers, "sparkgrid", email.split("@")[0]).status_code == 201
    job = refresh_and_wait(cloud, headers)
    assert (job["status"], job["succeeded"]) == ("succeeded", 4), job
    return headers


def seen_by(cloud: Cloud, headers: dict[str, str]) -> dict[str, Any]:
    """What a user sees: their profile, accounts (as linked: ids, providers, statuses) and bills."""
    me = cloud.api.get("/me", headers=headers)
    assert me.status_code == 200, me.text
    accounts = cloud.api.get("/accounts", headers=headers).json()["accounts"]
    bills = cloud.api.get("/bills", headers=headers, params={"limit": 200}).json()["bills"]
    return {
        "me": me.json(),
        "accounts": sorted((a["account_id"], a["provider"], a["status"]) for a in accounts),
        "bills": sorted(bills, key=lambda bill: str(bill["bill_id"])),
    }


def assert_still_fetches(cloud: Cloud, headers: dict[str, str]) -> None:
    """A refresh after the restart succeeds at every provider; SparkGrid's access tokens expired first,
    so it renews with the refresh token the service stored (decrypted with the kept KMS key)."""
    httpx.post(f"{cloud.sandbox}/_admin/tokens/sparkgrid/expire", timeout=10).raise_for_status()
    job = refresh_and_wait(cloud, headers)
    assert (job["status"], job["succeeded"], job["failed"]) == ("succeeded", 4, 0), job


def test_ctrl_c_stops_quietly_and_the_restart_has_everything(tmp_path: Path) -> None:
    data = tmp_path / "data"
    # Given a user with an account at every provider, their bills fetched
    with running(tmp_path / "first", data) as (first, cloud):
        headers = link_everything(cloud, "restart-sigint@example.com")
        before = seen_by(cloud, headers)
        assert len(before["bills"]) == 96
        # When the developer presses Ctrl-C
        stopped = first.interrupt()
    # Then it stops in order, quietly, with exit code 0
    assert_stopped_cleanly(stopped)
    # And started again, it says what it restored
    with running(tmp_path / "second", data, first) as (second, cloud):
        assert "restored AWS" in second.output() and "restored the mock provider's" in second.output()
        # and the user, their token (the signing key was kept), accounts and bills are all there
        assert seen_by(cloud, headers) == before
        assert cloud.login("restart-sigint@example.com", "e2e-password-1")
        # and their accounts still fetch
        assert_still_fetches(cloud, headers)
        # and seeding again did not add a second demo user or second demo accounts
        demo = cloud.login(DEMO_EMAIL, DEMO_PASSWORD)
        assert len(cloud.api.get("/accounts", headers=demo).json()["accounts"]) == 4
        assert_stopped_cleanly(second.interrupt())


def test_state_survives_sigkill(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with running(tmp_path / "first", data) as (first, cloud):
        headers = link_everything(cloud, "restart-sigkill@example.com")
        before = seen_by(cloud, headers)
        # When everything is killed at once (the cloud, moto, the sandbox: nobody saves on the way
        # out) once the periodic saves have caught up
        wait_until(lambda: not _unsaved(cloud), 60, "moto and the sandbox to save")
        pids = cloud.launched.state["pids"]
        for pid in (first.pid, pids["moto"], pids["mock_provider"]):
            os.kill(pid, signal.SIGKILL)
        first.stop(timeout=10)
        wait_until(first.ports_free, 30, "the killed servers' ports to close")
    # Then the restart has it all, and it still fetches
    with running(tmp_path / "second", data, first) as (second, cloud):
        assert seen_by(cloud, headers) == before
        assert_still_fetches(cloud, headers)
        # When this time only the local cloud itself is killed, right after a change
        extra = cloud.api.post(
            "/accounts/link",
            headers=headers,
            json={"provider": "clearwater", "credentials": {"api_key": "cw_sandbox_late"}},
        )
        assert extra.status_code == 201, extra.text
        after = seen_by(cloud, headers)
        os.kill(second.pid, signal.SIGKILL)
        second.stop(timeout=10)
        # Then the servers it started notice, save and exit on their own (nothing keeps the ports)
        wait_until(second.ports_free, 30, "the orphaned servers to exit")
    with running(tmp_path / "third", data, first, LOCALCLOUD_SEED="0") as (_, cloud):
        assert seen_by(cloud, headers)["accounts"] == after["accounts"]


def _unsaved(cloud: Cloud) -> bool:
    moto = httpx.get(f"{cloud.aws_endpoint}{STATE_PATH}", timeout=10).json()
    sandbox = httpx.get(f"{cloud.sandbox}/_admin/persistence", timeout=10).json()
    return bool(moto["unsaved_changes"] or sandbox["unsaved_changes"])


def test_an_unreadable_state_file_is_reported_and_the_cloud_starts(tmp_path: Path) -> None:
    # Given kept state that cannot be read (a disk that filled up, a hand edit)
    data = tmp_path / "data"
    data.mkdir()
    (data / MOTO_STATE).write_bytes(b"\x80\x05 half a pickle")
    (data / SANDBOX_STATE).write_text('{"format": 1, "state": {"tok')
    # When the local cloud starts
    with running(tmp_path / "cloud", data, LOCALCLOUD_SEED="0") as (process, cloud):
        # Then it says what it could not restore, and where the unreadable files are kept
        output = process.output()
        assert "WARNING        could not restore the saved AWS state" in output
        assert "WARNING        could not restore the mock provider's tokens" in output
        assert (data / f"{MOTO_STATE}.unreadable").read_bytes() == b"\x80\x05 half a pickle"
        # and it works, empty
        assert cloud.api.post("/auth/login", json={"email": DEMO_EMAIL, "password": DEMO_PASSWORD}).status_code == 401
        cloud.new_user("after-corruption@example.com")
        assert_stopped_cleanly(process.interrupt())


def test_fresh_starts_empty(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with running(tmp_path / "first", data, LOCALCLOUD_SEED="0") as (first, cloud):
        cloud.new_user("fresh@example.com")
        first.interrupt()
    with running(tmp_path / "second", data, first, fresh=True, LOCALCLOUD_SEED="0") as (second, cloud):
        assert f"starting empty: removed the state kept in {data}" in second.output()
        login = cloud.api.post("/auth/login", json={"email": "fresh@example.com", "password": "e2e-password-1"})
        assert login.status_code == 401
        cloud.new_user("fresh@example.com")
