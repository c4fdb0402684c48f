"""The README, run: every request of its ```sh blocks, in order, against the local cloud as `make run` starts
it (its settings, its demo user), each status and documented shape checked (``tests/readme.py`` says how
the README documents them). Requests go out with httpx, not through a shell."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from localcloud import demo
from localcloud.demo import DEMO_EMAIL, DEMO_PASSWORD
from localcloud.template import ROOT
from tests.e2e.harness import Cloud, local_cloud, wait_until
from tests.readme import ReadmeRequest, differences, readme_requests

README = ROOT / "README.md"
GATEWAY_HOSTS = ("localhost:3000", "127.0.0.1:3000")
_VARIABLE = re.compile(r"\$\{?([A-Z_][A-Z0-9_]*)\}?")
_PLACEHOLDER = re.compile(r"<([a-z_]+)>")
_JOB = re.compile(r"^/bills/refresh/[^/]+$")


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


class ReadmeRun:
    """Runs README requests one after another, as a reader would: ``$TOKEN`` from the latest assignment,
    ``<placeholders>`` from the latest answer holding that field."""

    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud
        self.variables: dict[str, str] = {}
        self.fields: dict[str, Any] = {}
        self.problems: list[str] = []

    def _substituted(self, request: ReadmeRequest, text: str) -> str:
        def variable(match: re.Match[str]) -> str:
            assert match.group(1) in self.variables, f"README line {request.line}: ${match.group(1)} is never set"
            return self.variables[match.group(1)]

        def placeholder(match: re.Match[str]) -> str:
            assert match.group(1) in self.fields, f"README line {request.line}: no earlier answer had {match.group()}"
            return str(self.fields[match.group(1)])

        return _PLACEHOLDER.sub(placeholder, _VARIABLE.sub(variable, text))

    def _url(self, request: ReadmeRequest) -> str:
        written = self._substituted(request, request.url)
        parts = urlsplit(written if "://" in written else f"http://{written}")
        assert parts.netloc in GATEWAY_HOSTS, f"README line {request.line}: {written} is not the local API"
        return f"{self.cloud.launched.state['api']}{parts.path}" + (f"?{parts.query}" if parts.query else "")

    def send(self, request: ReadmeRequest) -> httpx.Response:
        url = self._url(request)
        headers = {name: self._substituted(request, value) for name, value in request.headers.items()}
        body = self._substituted(request, request.body) if request.body is not None else None
        answer = self.cloud.api.request(request.method, url, headers=headers, content=body)
        if request.method == "GET" and _JOB.match(urlsplit(url).path) and answer.status_code == 200:
            # "follow the job until its status is no longer running"
            return wait_until(  # type: ignore[no-any-return]
                lambda: (job := self.cloud.api.get(url, headers=headers)).json()["status"] != "running" and job,
                60,
                f"the job of README line {request.line}",
            )
        return answer

    def run(self, request: ReadmeRequest) -> None:
        answer = self.send(request)
        where = f"README line {request.line} ({request.method} {request.url}, documented '# {request.documented_as}')"
        assert answer.status_code == request.status, f"{where} answered {answer.status_code}: {answer.text[:500]}"
        if request.sample_status is not None:
            assert (answer.status_code, answer.content) == (request.sample_status, b""), where
        body: Any = answer.json() if answer.content else None
        for documented, values in ((request.shape, True), (request.sample, False)):
            if documented is not None:
                self.problems += [f"{where}: {problem}" for problem in differences(documented, body, values)]
        if request.assigns is not None:
            name, field = request.assigns
            assert isinstance(body, dict) and field in body, f"{where}: no {field} in the answer to set ${name} from"
            self.variables[name] = body[field]
        if isinstance(body, dict):
            self.fields.update({key: value for key, value in body.items() if value is not None})


def test_every_request_in_the_readme_answers_as_documented(cloud: Cloud) -> None:
    requests = readme_requests(README.read_text())
    assert len(requests) >= 20, "the README's requests were not found"
    # Given the local cloud once `make run` has fetched the demo user's accounts (each link fetches once)
    headers = cloud.login(DEMO_EMAIL, DEMO_PASSWORD)
    wait_until(
        lambda: all(account["last_success_at"] for account in demo_accounts(cloud, headers)),
        60,
        "the demo user's first fetches",
    )
    # When each request runs in the README's order, then each answers with its documented status and shape
    run = ReadmeRun(cloud)
    for request in requests:
        run.run(request)
    assert run.problems == [], "\n".join(run.problems)
