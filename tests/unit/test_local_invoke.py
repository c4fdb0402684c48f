"""``make invoke`` without ``make run``: says at once that the local cloud is not running, and how to
start it, instead of waiting on botocore's retries and printing its traceback."""

from __future__ import annotations

import os
import subprocess
import sys

from localcloud.launch import free_port
from localcloud.template import ROOT


def test_invoke_without_a_running_cloud_says_so_and_how_to_start_it() -> None:
    # Given nothing listening where the local cloud's AWS endpoint would be
    port = free_port()
    environment = {**os.environ, "LOCALCLOUD_MOTO_PORT": str(port)}
    environment.pop("AWS_ENDPOINT_URL", None)
    # When a function is invoked (the timeout only keeps a regression from hanging the suite)
    done = subprocess.run(
        [sys.executable, "-m", "localcloud.invoke", "GetBillsFunction", "events/get_bills.json"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=20,
    )
    # Then it fails with a message saying what is wrong and what to do, and no traceback
    assert done.returncode == 1
    assert f"The local cloud is not running: nothing answers at http://127.0.0.1:{port}" in done.stderr
    assert "Start it with `make run`" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
