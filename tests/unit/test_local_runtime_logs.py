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
        re.search(r"\tDuration: \d+\.\d\d ms\tBilled Duration: \d+ ms\tMemory Size: 128 MB$", r) for r in reports
    )
    documents = [json.loads(line) for line in lines if line not in reports]
    assert sorted((d["worker"], d["n"]) for d in documents) == [(w, n) for w in (1, 2) for n in range(400)]
