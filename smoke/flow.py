"""One run of the acceptance flow against a deployed billhub API, as the README's walkthrough does it:
register a throwaway user, log in, link one provider account, refresh it and wait for the refresh job,
read the bills (all, then that provider's) and the insights, delete the account, delete the user.

Usage: ``python -m smoke --api URL [--provider NAME] [--credentials-file PATH] [--timeout S]``, or
``make smoke API=URL [PROVIDER=… CREDENTIALS='{…}' | CREDENTIALS_FILE=…]``. Without a provider it links
ClearWater with the sandbox's demo API key (``localcloud/demo.py``, documented in
``mock_provider/README.md``), so a deployment pointed at the sandbox needs no flags; a deployment that
reaches real providers takes a real test account's credentials, from ``SMOKE_CREDENTIALS`` (JSON) or a
file, never from the command line (where ``ps`` would show them).

Every step prints one line: its name, the status it got and how long it took. A step that gets another
status or shape than the API documents fails the run (exit 1) with its status and JSON error body. The
user is deleted whatever happened, and the run fails if it could not be. Answers that say when to try
again (``Retry-After`` on a 429, and on a 409/503 whose code asks for a retry) are waited for. Passwords,
tokens and credentials are never printed: every line is scrubbed of them before it is written.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

import httpx

from localcloud.demo import DEMO_CREDENTIALS

DEFAULT_PROVIDER = "clearwater"
REFRESH_TIMEOUT = 60.0
POLL_INTERVAL = 0.5
REQUEST_TIMEOUT = 30.0
# Retry-After is honoured up to this long per wait, this many times per request; longer is a failure.
MAX_RETRY_AFTER = 60.0
MAX_RETRIES = 5
# Statuses whose Retry-After means "send it again then" (429 too many; 409 idempotency_in_progress;
# 503 deletion_unfinished, idempotency_unavailable): docs/errors.md.
RETRIED_STATUSES = frozenset({409, 429, 503})
REDACTED = "[redacted]"
# Fields whose values are secret wherever they appear in a body that is printed.
SECRET_FIELDS = frozenset({"password", "access_token", "refresh_token", "credentials", "authorization", "secret"})
BODY_LIMIT = 1000
EXIT_FAILED = 1
EXIT_USAGE = 2


class StepFailed(Exception):
    """A step got an answer the flow cannot go on from (or none at all)."""

    def __init__(self, step: str, status: int | None, reason: str, body: str = "") -> None:
        super().__init__(reason)
        self.step, self.status, self.reason, self.body = step, status, reason, body


class Scrubber:
    """Removes every secret of the run (password, token, credential values) from text before it is printed."""

    def __init__(self) -> None:
        self._secrets: set[str] = set()

    def add(self, *values: Any) -> None:
        for value in values:
            if isinstance(value, dict):
                self.add(*value.values())
            elif isinstance(value, list):
                self.add(*value)
            elif isinstance(value, str) and len(value) >= 4:
                self._secrets.add(value)

    def text(self, text: str) -> str:
        for secret in sorted(self._secrets, key=len, reverse=True):
            text = text.replace(secret, REDACTED)
        return text

    def body(self, answer: httpx.Response) -> str:
        """An answer's body to print: JSON with secret fields masked, else the start of the text."""
        try:
            shown = json.dumps(_masked(answer.json()), ensure_ascii=False)
        except ValueError:
            shown = answer.text.strip()
        shown = self.text(shown)
        return shown if len(shown) <= BODY_LIMIT else f"{shown[:BODY_LIMIT]}…"


def _masked(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: REDACTED if key.lower() in SECRET_FIELDS else _masked(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_masked(item) for item in value]
    return value


def retry_after(answer: httpx.Response) -> float | None:
    """The seconds an answer asks to wait before sending again (header, seconds or HTTP date), if any."""
    header = answer.headers.get("Retry-After")
    if header is None:
        return None
    try:
        return max(0.0, float(header))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(header).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class Options:
    api: str
    provider: str
    credentials: dict[str, Any]
    timeout: float = REFRESH_TIMEOUT
    poll_interval: float = POLL_INTERVAL


class Smoke:
    """The flow against one API; ``run()`` returns the exit code."""

    def __init__(self, options: Options, out: TextIO, sleep: Callable[[float], None] = time.sleep) -> None:
        self.options = options
        self.out = out
        self.sleep = sleep
        self.client = httpx.Client(
            base_url=options.api, timeout=REQUEST_TIMEOUT, headers={"User-Agent": "billhub-smoke"}
        )
        self.email = f"smoke-{uuid.uuid4().hex[:16]}@billhub.example"
        self.password = secrets.token_urlsafe(24)
        self.scrub = Scrubber()
        self.scrub.add(self.password, options.credentials)
        self.token: str | None = None
        self.user_id: str | None = None
        self.maybe_registered = False
        self.user_deleted = False

    # ------------------------------------------------------------------ output
    def say(self, line: str) -> None:
        print(self.scrub.text(line), file=self.out, flush=True)

    def report(self, step: str, status: int | None, started: float, detail: str = "") -> None:
        elapsed = (time.monotonic() - started) * 1000
        shown = "-" if status is None else str(status)
        self.say(f"{step:<18} {shown:>4} {elapsed:>7.0f} ms  {detail}".rstrip())

    # ------------------------------------------------------------------ requests
    def send(
        self,
        step: str,
        method: str,
        path: str,
        expect: int,
        *,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[httpx.Response, float]:
        """One request of a step, sent again as an answer's Retry-After asks; the answer with the status
        ``expect`` and when the last attempt began (else ``StepFailed``, its line printed)."""
        sent_headers = dict(headers or {})
        if self.token is not None:
            sent_headers["Authorization"] = f"Bearer {self.token}"
        for attempt in range(MAX_RETRIES + 1):
            started = time.monotonic()
            try:
                answer = self.client.request(method, path, json=body, headers=sent_headers)
            except httpx.HTTPError as error:
                if step == "register" and not isinstance(error, httpx.ConnectError):
                    self.maybe_registered = True  # sent, but its answer never came
                self.report(step, None, started)
                raise StepFailed(
                    step, None, f"no answer from {method} {self.options.api}{path}: {type(error).__name__}: {error}"
                ) from error
            if step == "register" and (answer.status_code == 201 or answer.status_code >= 500):
                self.maybe_registered = True  # created, or perhaps created before the service failed
            wait = retry_after(answer)
            if answer.status_code == 429 and wait is None:
                wait = float(2**attempt)  # API Gateway's throttling says no time: back off
            if answer.status_code in RETRIED_STATUSES and wait is not None and attempt < MAX_RETRIES:
                if wait > MAX_RETRY_AFTER:
                    self.report(step, answer.status_code, started)
                    raise StepFailed(
                        step,
                        answer.status_code,
                        f"asked to wait {wait:.0f} s (Retry-After), more than {MAX_RETRY_AFTER:.0f} s",
                        self.scrub.body(answer),
                    )
                self.report(step, answer.status_code, started, f"Retry-After {wait:g} s: waiting")
                self.sleep(wait)
                continue
            break
        if answer.status_code != expect:
            self.report(step, answer.status_code, started)
            raise StepFailed(step, answer.status_code, f"expected {expect}", self.scrub.body(answer))
        return answer, started

    def json_of(self, step: str, answer: httpx.Response, *fields: str) -> dict[str, Any]:
        """The answer's JSON object, which must hold ``fields``."""
        try:
            document = answer.json()
        except ValueError:
            document = None
        missing = [name for name in fields if not isinstance(document, dict) or name not in document]
        if not isinstance(document, dict) or missing:
            raise StepFailed(
                step,
                answer.status_code,
                f"the answer lacks {', '.join(missing) or 'a JSON object'}",
                self.scrub.body(answer),
            )
        return document

    # ------------------------------------------------------------------ the flow
    def run(self) -> int:
        began = time.monotonic()
        self.say(f"smoke check of {self.options.api}, linking {self.options.provider}")
        failure: StepFailed | None = None
        try:
            self.steps()
        except StepFailed as failed:
            failure = failed
            detail = f": {failed.body}" if failed.body else ""
            status = "no answer" if failed.status is None else str(failed.status)
            self.say(f"FAILED at {failed.step} ({status}): {failed.reason}{detail}")
        finally:
            cleaned = self.cleanup()
            self.client.close()
        seconds = time.monotonic() - began
        if failure is not None:
            self.say(f"smoke check FAILED at step {failure.step} after {seconds:.1f} s")
            return EXIT_FAILED
        if not cleaned:
            self.say(f"smoke check FAILED: every step passed but the user could not be deleted ({seconds:.1f} s)")
            return EXIT_FAILED
        self.say(f"smoke check PASSED in {seconds:.1f} s")
        return 0

    def steps(self) -> None:
        provider = self.options.provider
        answer, started = self.send(
            "register", "POST", "/auth/register", 201, body={"email": self.email, "password": self.password}
        )
        self.user_id = str(self.json_of("register", answer, "user_id")["user_id"])
        self.report("register", answer.status_code, started, f"user {self.user_id} ({self.email})")

        self.log_in("login")

        answer, started = self.send(
            "link",
            "POST",
            "/accounts/link",
            201,
            body={"provider": provider, "credentials": self.options.credentials, "nickname": "smoke check"},
            headers={"Idempotency-Key": str(uuid.uuid4())},
        )
        account = self.json_of("link", answer, "account_id", "status")
        account_id = str(account["account_id"])
        self.report("link", answer.status_code, started, f"{provider} account {account_id}, {account['status']}")

        answer, started = self.send(
            "refresh", "POST", "/bills/refresh", 202, headers={"Idempotency-Key": str(uuid.uuid4())}
        )
        job_id = str(self.json_of("refresh", answer, "job_id")["job_id"])
        self.report("refresh", answer.status_code, started, f"job {job_id}")
        self.wait_for_refresh(job_id)

        answer, started = self.send("bills", "GET", "/bills", 200)
        bills = self.json_of("bills", answer, "bills", "totals", "accounts", "as_of")
        fresh = [a for a in bills["accounts"] if a.get("account_id") == account_id and a.get("last_success_at")]
        if not fresh:
            self.report("bills", answer.status_code, started)
            raise StepFailed("bills", answer.status_code, f"account {account_id} is not there with a last success")
        self.report(
            "bills",
            answer.status_code,
            started,
            f"{len(bills['bills'])} bills, due {json.dumps(bills['totals'].get('due'))}",
        )

        answer, started = self.send("bills-provider", "GET", f"/bills/{provider}", 200)
        own = self.json_of("bills-provider", answer, "bills", "totals", "accounts")
        others = sorted({bill.get("provider") for bill in own["bills"]} - {provider})
        if others:
            self.report("bills-provider", answer.status_code, started)
            raise StepFailed("bills-provider", answer.status_code, f"GET /bills/{provider} answered bills of {others}")
        self.report("bills-provider", answer.status_code, started, f"{len(own['bills'])} bills of {provider}")

        answer, started = self.send("insights", "GET", "/insights", 200)
        insights = self.json_of("insights", answer, "months", "monthly", "forecast")
        self.report("insights", answer.status_code, started, f"{insights['months']} months")

        answer, started = self.send("delete-account", "DELETE", f"/accounts/{account_id}", 204)
        self.report("delete-account", answer.status_code, started)

        self.delete_user("delete-me")

    def log_in(self, step: str) -> None:
        answer, started = self.send(
            step, "POST", "/auth/login", 200, body={"email": self.email, "password": self.password}
        )
        token = self.json_of(step, answer, "access_token")["access_token"]
        self.scrub.add(token)
        self.token = str(token)
        self.report(step, answer.status_code, started)

    def delete_user(self, step: str) -> None:
        answer, started = self.send(step, "DELETE", "/me", 204, body={"password": self.password})
        self.user_deleted = True
        self.report(step, answer.status_code, started, f"user {self.user_id} deleted")

    def wait_for_refresh(self, job_id: str) -> None:
        """Follows the refresh job until it is no longer running, as the README does; at most ``timeout``."""
        began = time.monotonic()
        deadline = began + self.options.timeout
        polls = 0
        while True:
            polls += 1
            answer, _ = self.send("refresh-wait", "GET", f"/bills/refresh/{job_id}", 200)
            job = self.json_of("refresh-wait", answer, "status", "succeeded", "failed", "pending")
            counts = f"succeeded {job['succeeded']}, failed {job['failed']}, pending {job['pending']}"
            if job["status"] != "running":
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.report("refresh-wait", answer.status_code, began)
                raise StepFailed(
                    "refresh-wait",
                    answer.status_code,
                    f"timed out after {self.options.timeout:g} s: refresh job {job_id} still running ({counts}); "
                    "a slow provider may need a longer --timeout",
                )
            self.sleep(min(self.options.poll_interval, remaining))
        if job["status"] != "succeeded":
            self.report("refresh-wait", answer.status_code, began)
            raise StepFailed(
                "refresh-wait", answer.status_code, f"the refresh job ended {job['status']}", self.scrub.body(answer)
            )
        self.report("refresh-wait", answer.status_code, began, f"{job['status']} ({counts}) after {polls} polls")

    def cleanup(self) -> bool:
        """Deletes the user this run created, unless it already did or none was created; False if it could not."""
        if self.user_deleted or not self.maybe_registered:
            return True
        self.say("cleanup: deleting the throwaway user")
        try:
            if self.token is None:
                try:
                    self.log_in("cleanup-login")
                except StepFailed as failed:
                    if failed.status == 401 and self.user_id is None:
                        self.say("cleanup: no such user, nothing to delete")
                        return True
                    raise
            self.delete_user("cleanup-delete-me")
        except StepFailed as failed:
            status = "no answer" if failed.status is None else str(failed.status)
            detail = f": {failed.body}" if failed.body else ""
            self.say(f"CLEANUP FAILED at {failed.step} ({status}): {failed.reason}{detail}")
            left = "is left" if self.user_id else "may be left"
            self.say(f"the user {self.email} ({self.user_id or 'id unknown'}) {left} on {self.options.api}")
            return False
        return True


# ---------------------------------------------------------------------- options
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m smoke",
        description="Run billhub's acceptance flow against a deployed API with a throwaway user.",
        epilog="Credentials come from SMOKE_CREDENTIALS (a JSON object) or a file, never the command line.",
    )
    parser.add_argument("--api", default=os.environ.get("SMOKE_API", ""), help="the API's base URL (SMOKE_API)")
    parser.add_argument(
        "--provider",
        default=os.environ.get("SMOKE_PROVIDER", ""),
        help=f"the provider to link (SMOKE_PROVIDER; default {DEFAULT_PROVIDER} with the sandbox's demo key)",
    )
    parser.add_argument(
        "--credentials-file",
        default=os.environ.get("SMOKE_CREDENTIALS_FILE", ""),
        help="a JSON file of the provider's credentials (SMOKE_CREDENTIALS_FILE)",
    )
    parser.add_argument("--timeout", type=float, default=REFRESH_TIMEOUT, help="seconds to wait for the refresh")
    parser.add_argument("--poll-interval", type=float, default=POLL_INTERVAL, help="seconds between polls")
    return parser


class UsageError(Exception):
    pass


def options_from(arguments: Sequence[str], environ: Mapping[str, str]) -> Options:
    parsed = _parser().parse_args(arguments)
    api = str(parsed.api).strip().rstrip("/")
    parts = urlsplit(api)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError("--api (make smoke API=…) must be the API's http(s) base URL, e.g. https://abc.execute-api…")
    if parsed.timeout <= 0 or parsed.poll_interval <= 0:
        raise UsageError("--timeout and --poll-interval must be positive")
    written = environ.get("SMOKE_CREDENTIALS", "")
    if written and parsed.credentials_file:
        raise UsageError("give the credentials once: SMOKE_CREDENTIALS or a credentials file, not both")
    provider = str(parsed.provider).strip()
    source = "SMOKE_CREDENTIALS (CREDENTIALS=)"
    if parsed.credentials_file:
        source = str(parsed.credentials_file)
        try:
            written = Path(parsed.credentials_file).read_text()
        except OSError as error:
            raise UsageError(f"cannot read the credentials file {source}: {error.strerror}") from error
    if written:
        if not provider:
            raise UsageError("credentials were given without the provider they are for (PROVIDER=, --provider)")
        try:
            credentials = json.loads(written)
        except json.JSONDecodeError as error:
            # The message says where the JSON breaks, never what it holds.
            raise UsageError(f"the credentials in {source} are not JSON: {error.msg} at char {error.pos}") from None
        if not isinstance(credentials, dict):
            raise UsageError(f"the credentials in {source} must be a JSON object of the provider's fields")
        return Options(api, provider, credentials, parsed.timeout, parsed.poll_interval)
    provider = provider or DEFAULT_PROVIDER
    if provider not in DEMO_CREDENTIALS:
        raise UsageError(
            f"the sandbox has no typed demo credentials for {provider!r} "
            f"(known: {', '.join(sorted(DEMO_CREDENTIALS))}; an OAuth2 provider cannot be linked without a browser): "
            "give CREDENTIALS or a credentials file"
        )
    return Options(api, provider, dict(DEMO_CREDENTIALS[provider]), parsed.timeout, parsed.poll_interval)


def main(arguments: Sequence[str] | None = None) -> int:
    try:
        options = options_from(sys.argv[1:] if arguments is None else arguments, os.environ)
    except UsageError as error:
        print(f"smoke: {error}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return Smoke(options, sys.stdout).run()
    except KeyboardInterrupt:
        return 130
