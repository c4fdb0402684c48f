"""`make smoke`, run as `make smoke` runs it (``python -m smoke --api URL``, credentials in the environment),
in a subprocess: against the local cloud it passes and leaves no trace of its user; against an API that
fails a step (none listening, a 500 in the middle, a 401 at login, a refresh that never ends) it exits
non-zero naming the step, and still deletes the user it created. The failing APIs are a tiny fake on
127.0.0.1 that records what it was sent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from localcloud.demo import DEMO_CREDENTIALS
from localcloud.launch import free_port
from localcloud.template import ROOT
from tests.e2e.harness import Cloud, local_cloud

TABLE = "billhub-local-BillsTable"
STEPS = [
    ("register", 201),
    ("login", 200),
    ("link", 201),
    ("refresh", 202),
    ("refresh-wait", 200),
    ("bills", 200),
    ("bills-provider", 200),
    ("insights", 200),
    ("delete-account", 204),
    ("delete-me", 204),
]


@dataclass(frozen=True)
class Ran:
    returncode: int
    output: str

    def lines(self) -> list[str]:
        return self.output.splitlines()

    def step_statuses(self) -> list[tuple[str, int]]:
        """(step, status) of every step line: a name, then a status and the milliseconds it took."""
        found = []
        for line in self.lines():
            words = line.split()
            if len(words) >= 4 and words[1].isdigit() and words[3] == "ms":
                found.append((words[0], int(words[1])))
        return found


def smoke(api: str, *arguments: str, **environment: str) -> Ran:
    """``make smoke API=… [PROVIDER=… CREDENTIALS=…]``: the Makefile exports PROVIDER and CREDENTIALS as
    SMOKE_PROVIDER and SMOKE_CREDENTIALS and runs this command."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("SMOKE_")}
    done = subprocess.run(  # noqa: S603 - this interpreter, our own module
        [sys.executable, "-m", "smoke", "--api", api, *arguments],
        cwd=ROOT,
        env={**env, **environment},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return Ran(done.returncode, done.stdout + done.stderr)


# ---------------------------------------------------------------------- against the local cloud
@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    # `make run`'s settings (the 5-minute refresh throttle included), without the demo user: unused here.
    with local_cloud(tmp_path_factory.mktemp("smoke"), LOCALCLOUD_SEED="0") as started:
        yield started


def user_items(cloud: Cloud, user_id: str, email: str) -> list[dict[str, Any]]:
    """Every item of the table that belongs to the user: theirs by key, or naming them."""
    pages = cloud.aws("dynamodb").get_paginator("scan").paginate(TableName=TABLE)
    return [
        item
        for page in pages
        for item in page["Items"]
        if item["PK"]["S"] in (f"USER#{user_id}", f"EMAIL#{email}") or item.get("user_id", {}).get("S") == user_id
    ]


def created_user(cloud: Cloud, ran: Ran) -> tuple[str, str]:
    """The user id and email the register line names."""
    register = next(line for line in ran.lines() if line.startswith("register "))
    user_id, email = register.split("user ", 1)[1].split()
    return user_id, email.strip("()")


def test_smoke_passes_against_the_local_cloud_with_no_flags_and_leaves_no_user(cloud: Cloud) -> None:
    # When `make smoke API=<the local cloud>` runs with no provider given
    ran = smoke(cloud.launched.state["api"])
    # Then every step passes, in order, with its documented status, and the run says it passed
    assert ran.returncode == 0, ran.output
    assert ran.step_statuses() == STEPS, ran.output
    assert ran.lines()[0].endswith("linking clearwater"), ran.output
    assert ran.lines()[-1].startswith("smoke check PASSED"), ran.output
    assert "24 bills of clearwater" in ran.output
    # And the user it created is gone: no profile, email, account, bill or job of theirs is left
    user_id, email = created_user(cloud, ran)
    assert user_items(cloud, user_id, email) == []
    assert cloud.api.post("/auth/login", json={"email": email, "password": "any-password-1"}).status_code == 401
    # And no credential or token was printed
    assert DEMO_CREDENTIALS["clearwater"]["api_key"] not in ran.output
    assert "eyJ" not in ran.output  # the start of every JWT


def test_smoke_links_the_provider_and_credentials_it_is_given_without_printing_them(cloud: Cloud) -> None:
    credentials = {"username": "smoke_basic_user_4417", "password": "pass_good"}
    # When `make smoke PROVIDER=fibrelink CREDENTIALS='{…}'` runs (a Basic-auth provider)
    ran = smoke(cloud.launched.state["api"], SMOKE_PROVIDER="fibrelink", SMOKE_CREDENTIALS=json.dumps(credentials))
    # Then it links that provider with those credentials and passes
    assert ran.returncode == 0, ran.output
    assert ran.step_statuses() == STEPS, ran.output
    assert "24 bills of fibrelink" in ran.output
    assert user_items(cloud, *created_user(cloud, ran)) == []
    # And neither credential appears in what it printed
    assert "smoke_basic_user_4417" not in ran.output
    assert "pass_good" not in ran.output


# ---------------------------------------------------------------------- against APIs that fail a step
Route = Callable[["FakeApi", dict[str, Any]], tuple[int, dict[str, str], Any]]


@dataclass
class FakeApi:
    """A stand-in API on 127.0.0.1: each (method, path) answers as its route says; every request is recorded."""

    routes: dict[tuple[str, str], Route]
    requests: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""

    def count(self, method: str, path: str) -> int:
        return sum(1 for r in self.requests if (r["method"], r["path"]) == (method, path))


def answer(status: int, body: Any = None, **headers: str) -> Route:
    return lambda _api, _request: (status, headers, body)


def error(status: int, code: str, **headers: str) -> Route:
    return answer(status, {"code": code, "message": f"{code} from the fake", "details": None}, **headers)


TOKEN = "fake-access-token-0d9a"
REGISTERED = answer(201, {"user_id": "fakeuser01"})
LOGGED_IN = answer(200, {"access_token": TOKEN, "token_type": "Bearer", "expires_in": 3600})
LINKED = answer(201, {"account_id": "a" * 32, "provider": "clearwater", "status": "active"})
DELETED = answer(204)


@pytest.fixture
def fake_api() -> Iterator[Callable[[dict[tuple[str, str], Route]], FakeApi]]:
    servers: list[ThreadingHTTPServer] = []

    def start(routes: dict[tuple[str, str], Route]) -> FakeApi:
        api = FakeApi(routes)

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                request = {
                    "method": self.command,
                    "path": self.path,
                    "headers": dict(self.headers),
                    "body": json.loads(raw) if raw else None,
                    "at": time.monotonic(),
                }
                api.requests.append(request)
                route = api.routes.get((self.command, self.path), error(404, "not_found"))
                status, headers, body = route(api, request)
                content = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = do_DELETE = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        servers.append(server)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        api.url = f"http://127.0.0.1:{server.server_address[1]}"
        return api

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_no_api_at_the_url_fails_the_first_step_and_creates_nothing_to_clean() -> None:
    # When the URL is one nothing listens on
    ran = smoke(f"http://127.0.0.1:{free_port()}")
    # Then it exits non-zero at once, naming the step and that no answer came
    assert ran.returncode == 1, ran.output
    assert "FAILED at register (no answer)" in ran.output
    assert ran.lines()[-1].startswith("smoke check FAILED at step register"), ran.output
    assert "cleanup" not in ran.output  # nothing was created


def test_a_500_in_the_middle_names_the_step_and_its_body_and_the_user_is_still_deleted(
    fake_api: Callable[[dict[tuple[str, str], Route]], FakeApi],
) -> None:
    logins = iter([error(429, "too_many_attempts", **{"Retry-After": "1"}), LOGGED_IN])
    api = fake_api(
        {
            ("POST", "/auth/register"): REGISTERED,
            ("POST", "/auth/login"): lambda api, request: next(logins)(api, request),
            ("POST", "/accounts/link"): error(500, "internal_error"),
            ("DELETE", "/me"): DELETED,
        }
    )
    ran = smoke(api.url)
    # Then the run fails at the link, with its status and JSON error body
    assert ran.returncode == 1, ran.output
    assert 'FAILED at link (500): expected 201: {"code": "internal_error"' in ran.output
    assert ran.lines()[-1].startswith("smoke check FAILED at step link"), ran.output
    # And the login's 429 was waited out for its Retry-After before the login was sent again
    first, second = (r["at"] for r in api.requests if r["path"] == "/auth/login")
    assert second - first >= 0.95
    # And the link carried an Idempotency-Key, and the user was deleted with their token and password
    (link,) = (r for r in api.requests if r["path"] == "/accounts/link")
    assert link["headers"].get("Idempotency-Key")
    (delete,) = (r for r in api.requests if (r["method"], r["path"]) == ("DELETE", "/me"))
    assert delete["headers"]["Authorization"] == f"Bearer {TOKEN}"
    (register,) = (r for r in api.requests if r["path"] == "/auth/register")
    assert delete["body"] == {"password": register["body"]["password"]}
    assert ("cleanup-delete-me", 204) in ran.step_statuses()
    # And neither the token nor the password was printed
    assert TOKEN not in ran.output
    assert register["body"]["password"] not in ran.output


def test_a_refused_login_fails_there_and_says_the_user_is_left(
    fake_api: Callable[[dict[tuple[str, str], Route]], FakeApi],
) -> None:
    api = fake_api({("POST", "/auth/register"): REGISTERED, ("POST", "/auth/login"): error(401, "unauthorized")})
    ran = smoke(api.url)
    # Then it fails at the login, tries once more to log in to delete the user, and says who is left
    assert ran.returncode == 1, ran.output
    assert 'FAILED at login (401): expected 200: {"code": "unauthorized"' in ran.output
    assert "CLEANUP FAILED at cleanup-login (401)" in ran.output
    assert "fakeuser01" in ran.output.split("CLEANUP FAILED", 1)[1]
    assert api.count("POST", "/auth/login") == 2
    assert ran.lines()[-1].startswith("smoke check FAILED at step login"), ran.output


def test_a_refresh_that_never_ends_times_out_with_a_clear_message(
    fake_api: Callable[[dict[tuple[str, str], Route]], FakeApi],
) -> None:
    running = {"job_id": "j1", "status": "running", "succeeded": 0, "failed": 0, "pending": 1, "errors": {}}
    api = fake_api(
        {
            ("POST", "/auth/register"): REGISTERED,
            ("POST", "/auth/login"): LOGGED_IN,
            ("POST", "/accounts/link"): LINKED,
            ("POST", "/bills/refresh"): answer(202, {"job_id": "j1", "accounts": ["a" * 32]}),
            ("GET", "/bills/refresh/j1"): answer(200, running),
            ("DELETE", "/me"): DELETED,
        }
    )
    ran = smoke(api.url, "--timeout", "1", "--poll-interval", "0.2")
    # Then it gives up after its timeout, polling at its interval, and says what it waited for
    assert ran.returncode == 1, ran.output
    assert "FAILED at refresh-wait (200): timed out after 1 s: refresh job j1 still running" in ran.output
    assert 4 <= api.count("GET", "/bills/refresh/j1") <= 8
    (refresh,) = (r for r in api.requests if r["path"] == "/bills/refresh")
    assert refresh["headers"].get("Idempotency-Key")
    # And the user is deleted all the same
    assert api.count("DELETE", "/me") == 1
    assert ran.lines()[-1].startswith("smoke check FAILED at step refresh-wait"), ran.output


def test_a_credentials_file_needs_its_provider_and_is_never_echoed(tmp_path: Path) -> None:
    secret_file = tmp_path / "credentials.json"
    secret_file.write_text('{"api_key": "cw_sandbox_never_shown_71"')  # broken JSON
    # Without a provider the run refuses the credentials; with one, broken JSON is named but not shown
    no_provider = smoke("http://127.0.0.1:9", "--credentials-file", str(secret_file))
    broken = smoke("http://127.0.0.1:9", "--credentials-file", str(secret_file), SMOKE_PROVIDER="clearwater")
    assert (no_provider.returncode, broken.returncode) == (2, 2)
    assert "without the provider" in no_provider.output
    assert "are not JSON" in broken.output
    assert "never_shown" not in no_provider.output + broken.output
