"""Starts the whole system on one machine: moto, the mock provider, the functions, gateway, poller, schedule."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import httpx
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from localcloud import demo
from localcloud.gateway import create_gateway
from localcloud.moto_faults import FaultSettings
from localcloud.moto_state import STATE_PATH
from localcloud.poller import QueuePoller, Schedule
from localcloud.provision import Stack, provision
from localcloud.runtime import DEFAULT_MAX_WORKERS, FunctionRuntime
from localcloud.stopping import join_within, shut_down
from localcloud.template import (
    ROOT,
    FunctionSpec,
    QueueBinding,
    authorizer_cache_seconds,
    authorizer_function,
    function_specs,
    load_template,
)
from mock_provider.registry import service_parameters

logger = logging.getLogger("localcloud")
HOST = "127.0.0.1"
STACK_NAME = "billhub-local"
DEFAULT_DATA_DIR = ROOT / ".localcloud" / "data"
# What each server keeps across restarts, inside the data directory.
MOTO_STATE = "moto.pickle"
SANDBOX_STATE = "mock_provider.json"
# How long a stop waits for the pollers and the schedule to finish what they are doing.
BACKGROUND_STOP_SECONDS = 2.0
# The local cloud's webhook retry schedule (LOCALCLOUD_WEBHOOK_RETRY_DELAYS): a retry shows within seconds.
LOCAL_WEBHOOK_RETRY_DELAYS = "2,4,8,16,32,64,128"
# How long a server may take to save its state and exit once asked to stop.
SERVER_STOP_SECONDS = 30.0


class _PathOnlyRequestLog(WSGIRequestHandler):
    """Logs each request's method and path, never its query: an OAuth2 callback's query holds a code
    and a state (API Gateway's access log, as the template sets it, logs the route, not the query)."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        self.log("info", '"%s %s" %s %s', self.command, urlsplit(self.path).path, code, size)


@dataclass
class CloudConfig:
    gateway_port: int = 3000
    moto_port: int = 5005
    mock_provider_port: int = 8300
    aws_endpoint_url: str | None = None  # another endpoint (LocalStack): moto is not started
    region: str = "us-east-1"
    schedule_seconds: float = 60.0
    retry_delay_seconds: int | None = 5
    log_dir: Path = ROOT / ".localcloud" / "logs"
    data_dir: Path | None = DEFAULT_DATA_DIR  # where state is kept across restarts; None: nothing kept
    fresh: bool = False  # forget the kept state and start empty
    seed_demo: bool = True
    parameter_overrides: dict[str, str] = field(default_factory=dict)
    # Seconds before each retry of a failed webhook delivery: seconds, where AWS's default takes 27 hours.
    webhook_retry_delays: str = LOCAL_WEBHOOK_RETRY_DELAYS
    # moto's fault mode (localcloud.moto_faults): the share of DynamoDB requests answered as AWS does under
    # load (throttles, conflicts, internal errors), the seed of its draws, and which kinds (all by default).
    dynamodb_faults: FaultSettings = field(default_factory=FaultSettings)

    @classmethod
    def from_environ(cls, environ: dict[str, str]) -> CloudConfig:
        retry = environ.get("LOCALCLOUD_RETRY_DELAY_SECONDS", "5")
        return cls(
            gateway_port=int(environ.get("LOCALCLOUD_GATEWAY_PORT", 3000)),
            moto_port=int(environ.get("LOCALCLOUD_MOTO_PORT", 5005)),
            mock_provider_port=int(environ.get("MOCK_PROVIDER_PORT", 8300)),
            aws_endpoint_url=environ.get("AWS_ENDPOINT_URL") or None,
            region=environ.get("AWS_DEFAULT_REGION", "us-east-1"),
            schedule_seconds=float(environ.get("LOCALCLOUD_SCHEDULE_SECONDS", 60)),
            retry_delay_seconds=None if retry == "queue" else int(retry),
            log_dir=Path(environ.get("LOCALCLOUD_LOG_DIR", ROOT / ".localcloud" / "logs")),
            # Empty: keep nothing across restarts.
            data_dir=Path(data) if (data := environ.get("LOCALCLOUD_DATA_DIR", str(DEFAULT_DATA_DIR))) else None,
            seed_demo=environ.get("LOCALCLOUD_SEED", "1") != "0",
            # Template parameters for this run, e.g. '{"ManualRefreshMinIntervalSeconds": "0"}'.
            parameter_overrides=json.loads(environ.get("LOCALCLOUD_PARAMETER_OVERRIDES", "{}")),
            webhook_retry_delays=environ.get("LOCALCLOUD_WEBHOOK_RETRY_DELAYS", LOCAL_WEBHOOK_RETRY_DELAYS),
            dynamodb_faults=FaultSettings(
                rate=float(environ.get("LOCALCLOUD_DYNAMODB_FAULT_RATE", 0)),
                seed=int(environ.get("LOCALCLOUD_DYNAMODB_FAULT_SEED", 0)),
                kinds=FaultSettings.parse_kinds(environ.get("LOCALCLOUD_DYNAMODB_FAULTS", "")),
            ),
        )


def _wait_for_port(port: int, process: subprocess.Popen[bytes] | None, name: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{name} exited with code {process.returncode}; see its log")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.5):
            return
        time.sleep(0.1)
    raise TimeoutError(f"{name} did not listen on {HOST}:{port} within {timeout:.0f} s")


class LocalCloud:
    def __init__(self, config: CloudConfig) -> None:
        self.config = config
        self.template = load_template()
        self.specs = function_specs(self.template)
        self.stack: Stack | None = None
        self.runtimes: dict[str, FunctionRuntime] = {}
        self.pollers: list[QueuePoller] = []
        self.schedules: list[Schedule] = []
        self._servers: dict[str, subprocess.Popen[bytes]] = {}  # in the order started
        self._threads: list[threading.Thread] = []
        self._gateway: BaseWSGIServer | None = None
        # What start() found of the state kept from the last run, for the banner: notes and problems.
        self.state_notes: list[str] = []
        self.state_problems: list[str] = []

    @property
    def endpoint_url(self) -> str:
        return self.config.aws_endpoint_url or f"http://{HOST}:{self.config.moto_port}"

    @property
    def gateway_url(self) -> str:
        return f"http://{HOST}:{self.config.gateway_port}"

    @property
    def mock_provider_url(self) -> str:
        return f"http://{HOST}:{self.config.mock_provider_port}"

    def aws_environment(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_REGION": self.config.region,
            "AWS_DEFAULT_REGION": self.config.region,
            "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
            "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
        }

    def client(self, service: str) -> Any:
        """A boto3 client for the local cloud's AWS endpoint."""
        aws = self.aws_environment()
        return boto3.session.Session(
            region_name=self.config.region,
            aws_access_key_id=aws["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=aws["AWS_SECRET_ACCESS_KEY"],
        ).client(service, endpoint_url=self.endpoint_url)  # type: ignore[call-overload]

    def provision(self) -> Stack:
        """Creates (or finds, when already there) every resource of the template at the endpoint."""
        # The sandbox's endpoints and client registrations, and where the gateway serves the API (the OAuth2
        # redirect URIs): the template has no default for them.
        parameters = {
            **service_parameters(self.mock_provider_url, public_base_url=self.gateway_url),
            # A receiver on this machine may get webhooks, and sees a retry within seconds.
            "WebhookAllowLoopback": "true",
            "WebhookRetryDelaysSeconds": self.config.webhook_retry_delays,
            **self.config.parameter_overrides,
        }
        return provision(self.template, self.client, self.config.region, STACK_NAME, parameters)

    def _spawn(self, name: str, command: list[str]) -> subprocess.Popen[bytes]:
        log = (self.config.log_dir / f"{name}.log").open("ab")
        # Unbuffered, so a server's log is complete while it runs (someone tailing it, a test reading it)
        environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
        # Its own session: a Ctrl-C in the terminal reaches this process only, which stops the servers
        # in order. Its stdin stays open while this process lives: the server stops (saving) once it closes.
        process = subprocess.Popen(
            [*command, "--until-stdin-closes"],
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=environment,
            start_new_session=True,
        )
        self._servers[name] = process
        return process

    def server_pids(self) -> dict[str, int]:
        """The process id of each server this cloud started (moto, the mock provider)."""
        return {name: process.pid for name, process in self._servers.items()}

    def _state_file(self, name: str) -> list[str]:
        return [] if self.config.data_dir is None else [str(self.config.data_dir / name)]

    def _forget_kept_state(self) -> None:
        data_dir = self.config.data_dir
        if data_dir is None:
            return
        kept = [data_dir / name for name in (MOTO_STATE, SANDBOX_STATE)]
        removed = [path for path in kept if path.exists()]
        for path in [*kept, *(path.with_name(f"{path.name}.unreadable") for path in kept)]:
            path.unlink(missing_ok=True)
        self.state_notes.append(
            f"starting empty: removed the state kept in {data_dir}" if removed else "starting empty (nothing was kept)"
        )

    def start(self) -> None:
        self.config.log_dir.mkdir(parents=True, exist_ok=True)
        if self.config.fresh:
            self._forget_kept_state()
        if self.config.aws_endpoint_url is not None:
            self.state_notes.append(f"AWS state is {self.config.aws_endpoint_url}'s own")
        else:
            moto_state = self._state_file(MOTO_STATE)
            moto = self._spawn(
                "moto",
                [
                    sys.executable,
                    "-m",
                    "localcloud.moto_server",
                    HOST,
                    str(self.config.moto_port),
                    *(["--state", *moto_state] if moto_state else []),
                    *self._fault_arguments(),
                ],
            )
            _wait_for_port(self.config.moto_port, moto, "moto server")
            if moto_state:
                self._note_moto_restore(httpx.get(f"{self.endpoint_url}{STATE_PATH}", timeout=10).json())
        sandbox_state = self._state_file(SANDBOX_STATE)
        provider = self._spawn(
            "mock_provider",
            [
                sys.executable,
                "-m",
                "mock_provider",
                "--port",
                str(self.config.mock_provider_port),
                *(["--state-file", *sandbox_state] if sandbox_state else []),
            ],
        )
        _wait_for_port(self.config.mock_provider_port, provider, "mock provider")
        if sandbox_state:
            self._note_sandbox_restore(httpx.get(f"{self.mock_provider_url}/_admin/persistence", timeout=10).json())

        environment = self.aws_environment()
        self.stack = self.provision()
        sqs = self.client("sqs")

        for spec in self.specs:
            self.runtimes[spec.logical_id] = FunctionRuntime(
                spec,
                function_environment(self.stack, spec, environment),
                self.config.log_dir,
                max_workers=max(DEFAULT_MAX_WORKERS, sum(_pollers(binding) for binding in spec.queues)),
            )
        # Cold-start every function once, in parallel, before taking traffic.
        warmers = [threading.Thread(target=runtime.warm) for runtime in self.runtimes.values()]
        for thread in warmers:
            thread.start()
        for thread in warmers:
            thread.join()

        for spec in self.specs:
            for binding in spec.queues:
                for _ in range(_pollers(binding)):
                    self.pollers.append(
                        QueuePoller(
                            sqs,
                            self.stack.refs[binding.queue_logical_id],
                            self.stack.attributes[binding.queue_logical_id]["Arn"],
                            binding,
                            self.runtimes[spec.logical_id],
                            self.config.region,
                            self.config.retry_delay_seconds,
                        )
                    )
            for index, _ in enumerate(spec.schedules):
                self.schedules.append(
                    Schedule(
                        self.runtimes[spec.logical_id],
                        f"{spec.logical_id}-schedule-{index}",
                        self.config.schedule_seconds,
                        self.config.region,
                    )
                )
        self._start_gateway()
        for worker in self._background_workers():
            thread = threading.Thread(target=worker.run, daemon=True)
            thread.start()
            self._threads.append(thread)
        if self.config.seed_demo:
            self.seed_demo()

    def _start_gateway(self) -> None:
        routes = [(route, self.runtimes[spec.logical_id]) for spec in self.specs for route in spec.routes]
        api = next(r for r in self.template["Resources"].values() if r["Type"] == "AWS::Serverless::HttpApi")
        app = create_gateway(
            routes,
            self.runtimes[authorizer_function(self.template)],
            api["Properties"].get("CorsConfiguration", {}),
            self.config.region,
            authorizer_cache_seconds(self.template),
        )
        self._gateway = make_server(
            HOST, self.config.gateway_port, app, threaded=True, request_handler=_PathOnlyRequestLog
        )
        thread = threading.Thread(target=self._gateway.serve_forever, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _fault_arguments(self) -> list[str]:
        faults = self.config.dynamodb_faults
        if faults.rate <= 0:
            return []
        return [
            f"--dynamodb-fault-rate={faults.rate}",
            f"--dynamodb-fault-seed={faults.seed}",
            f"--dynamodb-faults={','.join(faults.kinds)}",
        ]

    def _note_moto_restore(self, report: dict[str, Any]) -> None:
        for what, problem in report["not_restored"].items():
            subject = "the saved AWS state" if what == "file" else f"the saved {what} state"
            self.state_problems.append(
                f"could not restore {subject} from {report['file']} ({problem}); it starts empty "
                f"(the file is kept as {report['kept_as']})"
            )
        if report["restored"]:
            self.state_notes.append(
                f"restored AWS ({', '.join(sorted(report['restored']))}) in {report['restore_seconds']:g} s"
            )

    def _note_sandbox_restore(self, report: dict[str, Any]) -> None:
        if report.get("problem"):
            self.state_problems.append(
                f"could not restore the mock provider's tokens from {report['file']} ({report['problem']}); "
                f"it starts empty (the file is kept as {report['kept_as']})"
            )
        elif report.get("found"):
            tokens = sum(count for name, count in report["restored"].items() if name != "revisions")
            self.state_notes.append(f"restored the mock provider's {tokens} OAuth codes and tokens")

    def seed_demo(self) -> dict[str, Any]:
        return demo.seed(self.gateway_url)

    def _background_workers(self) -> list[QueuePoller | Schedule]:
        return [*self.pollers, *self.schedules]

    def stop(self) -> None:
        """Stops in order, quietly: nothing new starts (schedule, pollers, gateway), the functions finish
        what they are doing, then the mock provider and moto save their state and exit."""
        for worker in self._background_workers():
            worker.stop()
        if self._gateway is not None:
            shut_down(self._gateway)
        # A poller delivering a batch gets the time to finish it; one in a long poll (a daemon) is left to it.
        join_within(self._threads, BACKGROUND_STOP_SECONDS)
        if self.runtimes:
            with ThreadPoolExecutor(len(self.runtimes)) as pool:
                list(pool.map(lambda runtime: runtime.stop(), self.runtimes.values()))
        servers = list(reversed(self._servers.values()))
        for process in servers:
            if process.stdin is not None:
                with contextlib.suppress(OSError):
                    process.stdin.close()  # the server saves its state and exits
        deadline = time.monotonic() + SERVER_STOP_SECONDS
        for process in servers:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _pollers(binding: QueueBinding) -> int:
    """Pollers for one event source mapping: its MaximumConcurrency, at most two on a laptop."""
    return min(binding.maximum_concurrency, 2)


def function_environment(stack: Stack, spec: FunctionSpec, aws_environment: dict[str, str]) -> dict[str, str]:
    """The function's environment as Lambda would set it: the template's variables, resolved."""
    environment = {str(name): str(value) for name, value in stack.resolve(spec.environment).items()}
    environment.update(aws_environment)
    environment["AWS_LAMBDA_FUNCTION_NAME"] = spec.logical_id
    return environment
