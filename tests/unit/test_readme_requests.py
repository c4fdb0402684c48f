"""The README's requests can all be read (each with its documented status), and the reading and the
comparison that tests/e2e/test_readme.py relies on catch what they are meant to catch."""

from __future__ import annotations

import pytest

from localcloud.template import ROOT
from tests.readme import differences, parse_shape, readme_requests


def sh(*lines: str) -> str:
    return "\n".join(["```sh", *lines, "```"])


def test_every_request_of_the_readme_is_read_with_its_status() -> None:
    requests = readme_requests((ROOT / "README.md").read_text())
    assert len(requests) >= 20
    assert all(request.status in range(200, 600) for request in requests)
    # every request after the first login runs with a token somebody set: none is sent as nobody
    assert [r.assigns for r in requests if r.assigns] == [("TOKEN", "access_token")] * 2


def test_a_request_is_read_with_its_continuations_headers_body_and_shape() -> None:
    text = sh(
        "# a comment line",
        "curl -s -X POST localhost:3000/things -H 'Content-Type: application/json' \\",
        """  -d '{"name": "a # not a comment"}'   # 201 {"id", "kind": "thing"}; 409 taken""",
        "make run",
    )
    [request] = readme_requests(text)
    assert (request.line, request.method, request.url, request.status) == (3, "POST", "localhost:3000/things", 201)
    assert (request.headers, request.body) == ({"Content-Type": "application/json"}, '{"name": "a # not a comment"}')
    assert request.shape == {"id": "…", "kind": "thing"}


def test_an_assignment_and_the_samples_after_a_block() -> None:
    text = "\n".join(
        [
            sh("T=$(curl -s localhost:3000/login -d '{}' | python3 -c 'print(x[\"token\"])')   # 200"),
            "",
            "```json",
            '{"token": "…"}',
            "```",
        ]
    )
    [request] = readme_requests(text)
    assert (request.method, request.assigns, request.sample) == ("POST", ("T", "token"), {"token": "…"})


@pytest.mark.parametrize(
    ("line", "complaint"),
    [
        ("curl -s localhost:3000/me   # the profile", "must end with '# <status>"),
        ("curl -s localhost:3000/me", "must end with '# <status>"),
        ("curl -sS localhost:3000/me   # 200", "curl option -sS"),
        ("wget localhost:3000/me   # 200", "neither a curl request"),
    ],
)
def test_a_request_the_test_could_not_check_is_refused(line: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        readme_requests(sh(line))


def test_differences_in_keys_values_and_formats() -> None:
    shape = parse_shape('{"job_id", "status": "succeeded", "errors": {}, "when": "2026-11-22T01:41:15Z"}')
    answer = {"job_id": "j", "status": "succeeded", "errors": {"a": "x"}, "when": "2026-11-22T01:41:15Z"}
    assert differences(shape, answer, values=True) == []
    assert differences(shape, {**answer, "extra": 1}, values=True) == ["the answer has undocumented ['extra']"]
    assert differences(shape, {**answer, "status": "failed"}, values=True) == [
        "status is 'failed', documented as 'succeeded'"
    ]
    assert differences(shape, {**answer, "status": "failed"}, values=False) == []
    assert differences(shape, {**answer, "when": None}, values=False) == []  # a sample's date, null today
    assert differences(shape, {**answer, "when": "2026-11-22T01:41:15.5Z"}, values=False) == [
        "when is '2026-11-22T01:41:15.5Z', documented in the format of '2026-11-22T01:41:15Z'"
    ]
    # "…" as a key allows more; a map of currencies is checked as such; a list element by element
    assert differences(parse_shape('{"a", "…"}'), {"a": 1, "b": 2}, values=True) == []
    assert differences({"due": {"USD": "1.00"}}, {"due": {"GBP": "2.00", "EUR": "1.00"}}, values=False) == []
    assert differences({"due": {"USD": "1.00"}}, {"due": {"total": "2.00"}}, values=False) == [
        "due has keys ['total'], documented as a map of currencies"
    ]
    assert differences({"xs": [{"a": 1}, "…"]}, {"xs": [{"a": 2}, {"b": 3}]}, values=False) == [
        "xs[1] lacks ['a']",
        "xs[1] has undocumented ['b']",
    ]
