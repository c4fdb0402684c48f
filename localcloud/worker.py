"""One Lambda execution environment: imports a function's handler and serves invocations over a pipe.

Started by ``FunctionRuntime`` with the function's own environment, like Lambda does: the code
directory and the layer on ``sys.path``, module-level set-up run once at cold start, then one event
at a time. Requests arrive as JSON lines on stdin; answers leave as JSON lines on the original stdout,
while anything the handler prints (logs) goes to stderr.
"""

from __future__ import annotations

import importlib
import io
import json
import math
import os
import sys
import time
import traceback
import uuid
from dataclasses import dataclass
from typing import Any


@dataclass
class LocalLambdaContext:
    function_name: str
    memory_limit_in_mb: int
    timeout_seconds: int
    aws_request_id: str
    invoked_function_arn: str
    function_version: str = "$LATEST"
    log_group_name: str = ""
    log_stream_name: str = "local"
    started_at: float = 0.0

    def get_remaining_time_in_millis(self) -> int:
        return max(int((self.started_at + self.timeout_seconds - time.monotonic()) * 1000), 0)


def run_snapstart_lifecycle() -> None:
    """What Lambda does to a SnapStart function between its init and its first event, as its runtime
    does it: the before-snapshot hooks in the reverse order of their registration (the snapshot is
    taken then), and after a restore the after-restore hooks in their order. Locally there is no
    snapshot: the same process goes on, so the hooks run on every cold start, as in tests."""
    from snapshot_restore_py import get_after_restore, get_before_snapshot

    before = get_before_snapshot()
    while before:
        # The registry holds (callable, args, kwargs), whatever its annotation says.
        hook, args, kwargs = before.pop()
        hook(*args, **kwargs)
    for hook, args, kwargs in get_after_restore():
        hook(*args, **kwargs)


def main() -> None:
    code_dir, layer_dir, module_name, handler_name, function_name, timeout, memory, snapstart = sys.argv[1:9]
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # the handler's prints and logs go to stderr, never into the protocol
    # One write per line, as Lambda makes each line one log event: block-buffered output from
    # several workers appending to one log file would split each other's lines.
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)
    sys.path[:0] = [code_dir, layer_dir]
    handler = getattr(importlib.import_module(module_name), handler_name)
    if snapstart == "1":
        run_snapstart_lifecycle()
    region = os.environ.get("AWS_REGION", "us-east-1")
    protocol.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        event = json.loads(line)
        context = LocalLambdaContext(
            function_name=function_name,
            memory_limit_in_mb=int(memory),
            timeout_seconds=int(timeout),
            aws_request_id=str(uuid.uuid4()),
            invoked_function_arn=f"arn:aws:lambda:{region}:123456789012:function:{function_name}",
            log_group_name=f"/aws/lambda/{function_name}",
            started_at=time.monotonic(),
        )
        # The environment's own CPU over the invocation, every thread of it (the fetcher's boto3 calls
        # run in threads); one invocation at a time per worker, so the delta is this invocation's.
        cpu_started = time.process_time()
        try:
            answer: dict[str, Any] = {"result": handler(event, context)}
        except Exception as error:
            traceback.print_exc()
            answer = {"error": {"errorType": type(error).__name__, "errorMessage": str(error)}}
        # The line Lambda writes after every invocation; benchmarks read durations from it. `CPU Time` is
        # the local runtime's own field, not Lambda's: the handler's CPU on this machine, without the
        # waits (on moto, on providers) that its wall Duration includes.
        duration_ms = (time.monotonic() - context.started_at) * 1000
        cpu_ms = (time.process_time() - cpu_started) * 1000
        print(
            f"REPORT RequestId: {context.aws_request_id}\tDuration: {duration_ms:.2f} ms\t"
            f"Billed Duration: {math.ceil(duration_ms)} ms\tMemory Size: {memory} MB\tCPU Time: {cpu_ms:.2f} ms",
            file=sys.stderr,
        )
        protocol.write(json.dumps(answer, default=str) + "\n")
    # stdin closed: the execution environment is being shut down. Lambda freezes and discards it without
    # running the interpreter's teardown; so does this (logs are line-buffered, already written).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
