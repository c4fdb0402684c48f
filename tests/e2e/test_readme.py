"""The local cloud as `make run` starts it (its settings, its demo user), as the README's reader finds it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from localcloud import demo
from localcloud.demo import DEMO_EMAIL, DEMO_PASSWORD
from tests.e2e.harness import Cloud, local_cloud, wait_until


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    # `make run`'s own settings: the 5-minute refresh throttle included, as the README describes it.
    with local_cloud(tmp_path_factory.mktemp("readme")) as started:
        yield started


def demo_accounts(cloud: Cloud, headers: dict[str, str]) -> list[dict[str, Any]]:
    answer = cloud.api.get("/accounts", headers=headers)
    assert answer.status_code == 200, answer.text
    return list(answer.json()["accounts"])


def test_the_demo_user_can_refresh_at_once_and_seeding_again_changes_nothing(cloud: Cloud) -> None:
    # Given the local cloud as `make run` left it, seeded once
    headers = cloud.login(DEMO_EMAIL, DEMO_PASSWORD)
    linked = sorted((account["provider"], account["account_id"]) for account in demo_accounts(cloud, headers))
    assert [provider for provider, _ in linked] == ["clearwater", "fibrelink", "northgas", "sparkgrid"]
    # When the seed runs again (a restart of a local cloud that kept its state)
    again = demo.seed(cloud.launched.state["api"])
    # Then it finds the user and every account, and adds nothing
    assert again["linked"] == dict.fromkeys(["northgas", "clearwater", "fibrelink", "sparkgrid"], "already linked")
    assert sorted((a["provider"], a["account_id"]) for a in demo_accounts(cloud, headers)) == linked
    # And the demo user's own first refresh starts at once: the seed spent none of theirs
    started = cloud.api.post("/bills/refresh", headers=headers)
    assert started.status_code == 202, started.text
    job_id = started.json()["job_id"]
    job = wait_until(
        lambda: (
            (body := cloud.api.get(f"/bills/refresh/{job_id}", headers=headers).json())["status"] != "running" and body
        ),
        60,
        "the demo user's refresh",
    )
    assert (job["status"], job["succeeded"]) == ("succeeded", 4), job
