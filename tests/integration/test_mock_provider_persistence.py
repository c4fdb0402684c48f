"""The sandbox remembers the tokens it issued and the bills it revised across a restart
(``python -m mock_provider --state-file``), as a real provider would; an unreadable file never stops it."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from localcloud.launch import free_port
from mock_provider.app import create_app
from mock_provider.clearwater import account_number_for
from mock_provider.persistence import SandboxFile
from mock_provider.state import EXTENSION, SandboxState
from tests.e2e.harness import start_server, wait_until

ROOT = Path(__file__).resolve().parents[2]
TODAY = "2026-11-15"
REDIRECT = "http://127.0.0.1:1/callback"
SPARKGRID = ("billhub-sandbox", "sparkgrid-sandbox-secret")
NORTHGAS = ("billhub-sandbox", "northgas-sandbox-secret")
WATER_ACCOUNT = account_number_for("cw_sandbox_persist")


class Sandbox:
    def __init__(self, state_file: Path) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        self.http = httpx.Client(base_url=self.url, timeout=10)
        self.process = start_server(
            [
                "mock_provider",
                "--port",
                self.url.rsplit(":", 1)[1],
                "--today",
                TODAY,
                "--state-file",
                str(state_file),
                "--until-stdin-closes",
            ],
            self._answers,
            "the sandbox",
        )

    def _answers(self) -> bool:
        try:
            return self.http.get("/_admin/persistence").status_code == 200
        except httpx.TransportError:
            return False

    def persistence(self) -> dict[str, Any]:
        status: dict[str, Any] = self.http.get("/_admin/persistence").json()
        return status


@pytest.fixture
def sandboxes() -> Iterator[list[Sandbox]]:
    started: list[Sandbox] = []
    yield started
    for sandbox in started:
        if sandbox.process.poll() is None:
            sandbox.process.kill()
            sandbox.process.wait(10)


def start(sandboxes: list[Sandbox], state_file: Path) -> Sandbox:
    sandbox = Sandbox(state_file)
    sandboxes.append(sandbox)
    return sandbox


def grants(sandbox: Sandbox) -> dict[str, str]:
    """A SparkGrid customer's grant through the authorization code flow, a NorthGas service token and a
    revised ClearWater bill, as the service would come to hold them."""
    query = {
        "response_type": "code",
        "client_id": "billhub-sandbox",
        "redirect_uri": REDIRECT,
        "state": "s",
        "login_hint": "persisted",
    }
    redirect = sandbox.http.get("/sparkgrid/oauth/authorize", params=query)
    code = parse_qs(urlsplit(redirect.headers["Location"]).query)["code"][0]
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT}
    sparkgrid = sandbox.http.post("/sparkgrid/oauth/token", data=form, auth=SPARKGRID).json()
    northgas = sandbox.http.post(
        "/northgas/oauth/token", data={"grant_type": "client_credentials"}, auth=NORTHGAS
    ).json()
    revised = revise(sandbox)
    assert revised["revision"] == 2
    return {
        "access": sparkgrid["access_token"],
        "refresh": sparkgrid["refresh_token"],
        "service": northgas["access_token"],
    }


def revise(sandbox: Sandbox) -> dict[str, Any]:
    body = {"account": WATER_ACCOUNT, "bill_id": f"{WATER_ACCOUNT}-202610", "amount": "12.34"}
    revised: dict[str, Any] = sandbox.http.post("/_admin/revise/clearwater", json=body).json()
    return revised


def assert_remembered(sandbox: Sandbox, held: dict[str, str]) -> None:
    assert sandbox.http.get("/sparkgrid/api/v2/customer", headers=bearer(held["access"])).status_code == 200
    renewed = sandbox.http.post(
        "/sparkgrid/oauth/token", data={"grant_type": "refresh_token", "refresh_token": held["refresh"]}, auth=SPARKGRID
    )
    assert renewed.status_code == 200, renewed.text
    northgas = sandbox.http.get(
        "/northgas/api/accounts/NG123456", headers={**bearer(held["service"]), "X-Customer-Postcode": "NG1 1AA"}
    )
    assert northgas.status_code == 200
    assert revise(sandbox)["revision"] == 3  # the bill's earlier revision was remembered


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize(
    ("how", "ending"),
    [
        ("SIGTERM", lambda sandbox: sandbox.process.send_signal(signal.SIGTERM)),
        ("SIGINT", lambda sandbox: sandbox.process.send_signal(signal.SIGINT)),
        ("its parent gone (stdin closed)", lambda sandbox: sandbox.process.stdin.close()),
        (
            "SIGKILL once saved",
            lambda sandbox: (
                wait_until(lambda: not sandbox.persistence()["unsaved_changes"], 10, "a save"),
                sandbox.process.kill(),
            ),
        ),
    ],
)
def test_issued_tokens_and_revisions_survive_a_restart(
    tmp_path: Path, sandboxes: list[Sandbox], how: str, ending: Callable[[Sandbox], None]
) -> None:
    # Given tokens the sandbox issued and a bill it revised
    state_file = tmp_path / "mock_provider.json"
    first = start(sandboxes, state_file)
    held = grants(first)
    # When it stops (or is killed once it has saved) and starts again
    ending(first)
    first.process.wait(10)
    second = start(sandboxes, state_file)
    # Then it says what it restored, and every token still works, the revision counts on
    restored = second.persistence()
    assert (restored["found"], restored["problem"]) == (True, None), how
    assert restored["restored"]["sparkgrid"] >= 2
    assert_remembered(second, held)


@pytest.mark.parametrize("content", ["", "{not json", '{"format": 1, "state": {"tokens": 7}}', "[]"])
def test_an_unreadable_file_is_set_aside_and_the_sandbox_starts_empty(tmp_path: Path, content: str) -> None:
    state_file = tmp_path / "mock_provider.json"
    state_file.write_text(content)
    app = create_app(today=date.fromisoformat(TODAY))
    sandbox_file = SandboxFile(app.extensions[EXTENSION], state_file)
    report = sandbox_file.restore()
    assert report["found"] is True and report["problem"]
    assert Path(report["kept_as"]).read_text() == content
    assert not state_file.exists()
    state: SandboxState = app.extensions[EXTENSION]
    assert state.snapshot() == {"tokens": {"sparkgrid": _empty(), "northgas": _empty()}, "revisions": []}
    # and it keeps working and saving
    client = app.test_client()
    client.post("/northgas/oauth/token", data={"grant_type": "client_credentials"}, auth=NORTHGAS)
    assert sandbox_file.save_if_changed() is True
    assert SandboxFile(create_app().extensions[EXTENSION], state_file).restore()["restored"]["northgas"] == 1


def _empty() -> dict[str, dict[str, Any]]:
    return {"codes": {}, "access": {}, "refresh": {}}
