"""The local runtime keeps each log line whole, as Lambda keeps each printed line one log event."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import pytest

from localcloud.runtime import FunctionRuntime
from localcloud.template import FunctionSpec

CHATTY_HANDLER = """
import json
import re

def handler(event, context):
    for n in range(event["lines"]):
        print(json.dumps({"worker": event["worker"], "n": n, "padding": "x" * 700}))
    return event["worker"]
"""


def test_workers_writing_at_once_never_split_each_others_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTHONUNBUFFERED", raising=False)  # as on a machine that does not set it
    # Given a function whose two warm workers share one log file, as the fetcher's do
    code = tmp_path / "chatty"
    code.mkdir()
    (code / "app.py").write_text(CHATTY_HANDLER)
    spec = FunctionSpec("Chatty", code, "app", "handler", timeout=30, memory_mb=128, environment={})
    runtime = FunctionRuntime(spec, environment={}, log_dir=tmp_path, max_workers=2)
    try:
        # When both print hundreds of EMF-sized lines at the same time
        threads = [
            threading.Thread(target=runtime.invoke, args=({"worker": worker, "lines": 400},)) for worker in (1, 2)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        runtime.stop()
    # Then every line the handler printed is one whole JSON document, and each invocation ends with
    # Lambda's REPORT line
    lines = (tmp_path / "Chatty.log").read_text().splitlines()
    reports = [line for line in lines if line.startswith("REPORT RequestId: ")]
    assert len(reports) == 2
    assert all(
        re.search(r"\tDuration: \d+\.\d\d ms\tBilled Duration: \d+ ms\tMemory Size: 128 MB\tCPU Time: \d+\.\d\d ms$", r)
        for r in reports
    )
    documents = [json.loads(line) for line in lines if line not in reports]
    assert sorted((d["worker"], d["n"]) for d in documents) == [(w, n) for w in (1, 2) for n in range(400)]


BUSY_THEN_WAITING_HANDLER = """
import time

def handler(event, context):
    began = time.process_time()
    while time.process_time() - began < event["busy_ms"] / 1000:
        pass
    time.sleep(event["waiting_ms"] / 1000)
    return "done"
"""


def test_the_report_line_counts_the_handlers_cpu_apart_from_its_waits(tmp_path: Path) -> None:
    # Given a function that computes for 50 ms of CPU, then waits 300 ms (as on moto or a provider)
    code = tmp_path / "busy"
    code.mkdir()
    (code / "app.py").write_text(BUSY_THEN_WAITING_HANDLER)
    spec = FunctionSpec("Busy", code, "app", "handler", timeout=30, memory_mb=128, environment={})
    runtime = FunctionRuntime(spec, environment={}, log_dir=tmp_path, max_workers=1)
    try:
        # When it is invoked
        runtime.invoke({"busy_ms": 50, "waiting_ms": 300})
    finally:
        runtime.stop()
    # Then its REPORT line keeps Lambda's wall Duration and adds the CPU the invocation used: at least
    # the 50 ms computed, none of the 300 ms waited
    (report,) = [line for line in (tmp_path / "Busy.log").read_text().splitlines() if line.startswith("REPORT ")]
    duration, cpu = _milliseconds(report, "Duration"), _milliseconds(report, "CPU Time")
    assert duration >= 350
    assert 50 <= cpu < 200
    assert cpu < duration - 250


def _milliseconds(report: str, field: str) -> float:
    found = re.search(rf"\t{field}: ([\d.]+) ms(\t|$)", report)
    assert found, (field, report)
    return float(found.group(1))
