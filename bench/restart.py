"""Restart with kept state: how long ``make run`` takes to stop and to come back with 1,000 accounts.

The whole local cloud runs (``python -m localcloud``, as ``make run`` starts it) with its state kept in
the benchmark's own data directory. 1,000 accounts are linked through the API as people link them (125
users, two accounts at each of the four providers), and their first fetches land. Then:

1. Ctrl-C (SIGINT to the process group, as a terminal sends it): the time from the signal to the
   process's exit, its exit code, and whether anything after ``stopping...`` is a traceback.
2. ``make run`` again on the same ports: the time from starting the process until it serves (the
   state file it writes when up), and the parts the servers report (moto's restore).
3. Everything is checked there: every item of the table, every user's bills through the API with the
   token issued before the restart, and a refresh of some users after SparkGrid's access tokens expired
   (so their stored refresh tokens and KMS-encrypted credentials are used).
4. An unclean exit: the local cloud is killed (SIGKILL); the time until moto and the sandbox have saved
   and exited on their own (their ports free), then the restart again, checked again.
"""

from __future__ import annotations

import json
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from bench.refresh_throughput import (
    ACCOUNTS_PER_PROVIDER_PER_USER,
    LINKERS,
    USERS,
    _all_finished,
    _link_user,
    _queue_drained,
)
from localcloud.cloud import MOTO_STATE, SANDBOX_STATE
from localcloud.launch import CloudProcess, Launched, wait_for
from localcloud.moto_state import STATE_PATH

TITLE = "Restart with kept state"
TABLE = "billhub-local-BillsTable"
TARGET_RESTART_SECONDS = 30
TARGET_STOP_SECONDS = 3
BILLS_PER_ACCOUNT = 24
REFRESHED_USERS = 5


def run(workdir: Path) -> dict[str, Any]:
    started: list[CloudProcess] = []
    try:
        return _measure(workdir, started)
    finally:
        for process in started:  # nothing left running if a step failed
            process.stop(timeout=60)


def _measure(workdir: Path, started: list[CloudProcess]) -> dict[str, Any]:
    data = workdir / "data"
    overrides = {"ManualRefreshMinIntervalSeconds": "0"}
    settings = {
        "LOCALCLOUD_DATA_DIR": str(data),
        "LOCALCLOUD_SCHEDULE_SECONDS": "3600",  # only the benchmark's own work
        "LOCALCLOUD_PARAMETER_OVERRIDES": json.dumps(overrides),
    }
    (workdir / "first").mkdir()
    first = CloudProcess(workdir / "first", settings)
    started.append(first)
    launched = first.start()
    fresh_start_seconds = launched.state["startup_seconds"]
    began = time.monotonic()
    with ThreadPoolExecutor(LINKERS) as pool:
        users = list(pool.map(lambda number: _link_user(launched.state["api"], number), range(USERS)))
    wait_for(lambda: _queue_drained(launched), 900, "every first fetch", 2)
    linking_seconds = time.monotonic() - began
    before = _contents(launched)
    saved = _saved(launched)
    interrupted = first.interrupt()
    after_stop = interrupted.output.split("stopping...", 1)[-1]
    state_bytes = {name: (data / name).stat().st_size for name in (MOTO_STATE, SANDBOX_STATE)}

    restart = _restart(workdir / "second", settings, first, started)
    second = restart["launched"]
    checks = _check(second, users, before)
    before_kill = _contents(second)  # the refreshes just now added jobs and changed bills' fetch times
    killed_at = time.monotonic()
    restart["process"].stop(signal.SIGKILL, timeout=30)
    wait_for(first.ports_free, 120, "moto and the sandbox to save and exit", 0.05)
    saved_after_kill_seconds = time.monotonic() - killed_at

    again = _restart(workdir / "third", settings, first, started)
    checks_after_kill = _check(again["launched"], users, before_kill, refresh=False)
    final = again["process"].interrupt()

    return {
        "accounts": USERS * 4 * ACCOUNTS_PER_PROVIDER_PER_USER,
        "users": USERS,
        "items": before["items"],
        "bills": before["bills"],
        "state_bytes": state_bytes,
        "linking_seconds": round(linking_seconds, 1),
        "fresh_start_seconds": fresh_start_seconds,
        "save_while_running": saved["last_save"],
        "stop": {
            "seconds": round(interrupted.seconds, 2),
            "returncode": interrupted.returncode,
            "quiet": "Traceback" not in interrupted.output and "ERROR" not in after_stop,
            "said": after_stop.strip().splitlines()[-1] if after_stop.strip() else "",
        },
        "restart": {key: value for key, value in restart.items() if key not in ("launched", "process")},
        "checks": checks,
        "kill": {
            "saved_and_exited_seconds": round(saved_after_kill_seconds, 2),
            "restart": {key: value for key, value in again.items() if key not in ("launched", "process")},
            "checks": checks_after_kill,
        },
        "stop_after_restart": {
            "seconds": round(final.seconds, 2),
            "returncode": final.returncode,
            "quiet": "Traceback" not in final.output,
        },
        "target_restart_seconds": TARGET_RESTART_SECONDS,
        "target_stop_seconds": TARGET_STOP_SECONDS,
    }


def _restart(
    workdir: Path, settings: dict[str, str], like: CloudProcess, started: list[CloudProcess]
) -> dict[str, Any]:
    workdir.mkdir()
    process = CloudProcess(workdir, {**settings, **like.ports})
    started.append(process)
    began = time.monotonic()
    launched = process.start()
    seconds = time.monotonic() - began
    moto = httpx.get(f"{launched.state['aws_endpoint']}{STATE_PATH}", timeout=30).json()
    return {
        "process": process,
        "launched": launched,
        "seconds": round(seconds, 2),
        "reported_startup_seconds": launched.state["startup_seconds"],
        "moto_restore_seconds": moto["restore_seconds"],
        "restored": moto["restored"],
        "problems": launched.state["state_problems"],
    }


def _contents(cloud: Launched) -> dict[str, int]:
    """How many items the table holds, and how many of them are bills (a full scan, counted)."""
    dynamodb = cloud.aws("dynamodb")
    items = bills = 0
    for page in dynamodb.get_paginator("scan").paginate(TableName=TABLE, ProjectionExpression="SK"):
        items += page["Count"]
        bills += sum(1 for item in page["Items"] if item["SK"]["S"].startswith("BILL#"))
    return {"items": items, "bills": bills}


def _saved(cloud: Launched) -> dict[str, Any]:
    """Waits for moto's periodic save to catch up; its status then (the last save's pause and size)."""
    endpoint = f"{cloud.state['aws_endpoint']}{STATE_PATH}"

    def caught_up() -> dict[str, Any] | None:
        state: dict[str, Any] = httpx.get(endpoint, timeout=30).json()
        return state if state["saves"] and not state["unsaved_changes"] else None

    return wait_for(caught_up, 120, "moto's save", 0.5)


def _check(
    cloud: Launched, users: list[dict[str, str]], before: dict[str, int], *, refresh: bool = True
) -> dict[str, Any]:
    contents = _contents(cloud)
    api = httpx.Client(base_url=cloud.state["api"], timeout=60)
    per_user = ACCOUNTS_PER_PROVIDER_PER_USER * 4 * BILLS_PER_ACCOUNT
    # With the tokens issued before the restart: the signing key was kept.
    with ThreadPoolExecutor(LINKERS) as pool:
        counts = list(pool.map(lambda headers: _bill_count(api, headers), users))
    checks: dict[str, Any] = {
        "items_equal": contents == before,
        "users_with_every_bill": sum(1 for count in counts if count == per_user),
    }
    if refresh:
        httpx.post(f"{cloud.state['mock_provider']}/_admin/tokens/sparkgrid/expire", timeout=30).raise_for_status()
        jobs = [
            (headers, api.post("/bills/refresh", headers=headers).json()["job_id"])
            for headers in users[:REFRESHED_USERS]
        ]
        finished = wait_for(lambda: _all_finished(api, jobs), 300, "the refreshes after the restart", 1)
        checks["refreshed_accounts"] = sum(job["succeeded"] for job in finished)
        checks["refresh_failures"] = sum(job["failed"] for job in finished)
    checks["passed"] = (
        checks["items_equal"]
        and checks["users_with_every_bill"] == len(users)
        and checks.get("refresh_failures", 0) == 0
        and checks.get("refreshed_accounts", REFRESHED_USERS * 8) == REFRESHED_USERS * 8
    )
    return checks


def _bill_count(api: httpx.Client, headers: dict[str, str]) -> int:
    count, cursor = 0, None
    while True:
        page = api.get("/bills", headers=headers, params={"limit": 200, **({"cursor": cursor} if cursor else {})})
        page.raise_for_status()
        count += len(page.json()["bills"])
        if (cursor := page.json()["next_cursor"]) is None:
            return count


def report(result: dict[str, Any]) -> str:
    restart, kill, stop = result["restart"], result["kill"], result["stop"]
    checks = result["checks"]
    save = result["save_while_running"] or {}
    megabytes = result["state_bytes"][MOTO_STATE] / 1e6
    met = (
        restart["seconds"] < result["target_restart_seconds"]
        and kill["restart"]["seconds"] < result["target_restart_seconds"]
    )
    stop_met = stop["seconds"] < result["target_stop_seconds"] and stop["returncode"] == 0 and stop["quiet"]
    rows = [
        "| step | seconds |",
        "| --- | ---: |",
        f"| start with nothing kept (the demo seeded) | {result['fresh_start_seconds']} |",
        f"| Ctrl-C, to exit (exit code {stop['returncode']}, {'no traceback' if stop['quiet'] else '**tracebacks**'}) "
        f"| **{stop['seconds']}** |",
        f"| restart with the kept state, until it serves | **{restart['seconds']}** |",
        f"| of which moto restoring its file | {restart['moto_restore_seconds']} |",
        f"| SIGKILL of the local cloud, until moto and the sandbox have saved and exited | "
        f"{kill['saved_and_exited_seconds']} |",
        f"| restart after the SIGKILL, until it serves | **{kill['restart']['seconds']}** |",
        f"| Ctrl-C after a restart, to exit | {result['stop_after_restart']['seconds']} |",
    ]
    return "\n".join(
        [
            f"{result['accounts']:,} accounts ({result['users']} users, two at each of the four providers) with "
            f"{result['bills']:,} bills, {result['items']:,} items in the table; moto's state file "
            f"{megabytes:.1f} MB, the sandbox's {result['state_bytes'][SANDBOX_STATE] / 1e3:.0f} kB.",
            "",
            *rows,
            "",
            f"- Kept across the restart: every item ({'yes' if checks['items_equal'] else '**no**'}), every user's "
            f"{ACCOUNTS_PER_PROVIDER_PER_USER * 4 * BILLS_PER_ACCOUNT} bills through the API with the token issued "
            f"before it ({checks['users_with_every_bill']} of {result['users']} users); {checks['refreshed_accounts']} "
            f"accounts of {REFRESHED_USERS} users refreshed after it with SparkGrid's access tokens expired, "
            f"{checks['refresh_failures']} failed. After the SIGKILL: every item "
            f"({'yes' if kill['checks']['items_equal'] else '**no**'}), "
            f"{kill['checks']['users_with_every_bill']} of {result['users']} users with every bill.",
            f"- A save while running (moto pickling every backend while requests wait): "
            f"{save.get('pause_seconds')} s pause, {save.get('seconds')} s with the write; saves come at most every "
            "2 s and at least 10 pauses apart.",
            f"- Target: a restart under {result['target_restart_seconds']} s: {'met' if met else '**missed**'}; "
            f"Ctrl-C quiet and under {result['target_stop_seconds']} s: {'met' if stop_met else '**missed**'}.",
            "",
            "Method: `python -m localcloud` with its state in the benchmark's directory; accounts linked through the "
            f"API ({LINKERS} clients at once, first fetches included: {result['linking_seconds']} s). Ctrl-C is SIGINT "
            "to the process group, as a terminal sends it; stop times run from the signal to the process's exit. "
            "Restart times run from starting the process (same ports, same data) to the state file it writes once it "
            "serves, the demo seed's check included. Items are counted by a full scan before and after.",
        ]
    )
