"""``python -m mock_provider [--port N] [--today YYYY-MM-DD] [--faults JSON] [--state-file PATH]
[--until-stdin-closes]``: serve the sandbox on 127.0.0.1.

With ``--state-file`` the OAuth codes and tokens it issued and the bills it revised are kept in PATH
across restarts (``mock_provider.persistence``). It stops on SIGTERM or SIGINT, and with
``--until-stdin-closes`` also when its stdin closes (the process that started it is gone), saving first.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Any

from werkzeug.serving import make_server

from mock_provider import persistence
from mock_provider.app import create_app
from mock_provider.control import Control
from mock_provider.state import EXTENSION

FAULTS_ENV = "MOCK_PROVIDER_FAULTS"


def startup_faults(cli_value: str | None, environ: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """``MOCK_PROVIDER_FAULTS`` with ``--faults`` merged over it, fault by fault; both are JSON
    ``{provider: {fault: value}}``. ValueError if either is not."""
    merged: dict[str, dict[str, Any]] = {}
    for text in (environ.get(FAULTS_ENV), cli_value):
        if not text:
            continue
        parsed = json.loads(text)
        if not isinstance(parsed, dict) or not all(isinstance(faults, dict) for faults in parsed.values()):
            raise ValueError('faults must be a JSON object such as {"clearwater": {"latency_ms": 50}}')
        for provider, faults in parsed.items():
            merged.setdefault(provider, {}).update(faults)
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8300)
    parser.add_argument("--today", type=date.fromisoformat, default=None, help="pin the sandbox's date")
    parser.add_argument("--faults", default=None, help=f"start-up faults as JSON (merged over ${FAULTS_ENV})")
    parser.add_argument("--state-file", type=Path, default=None, help="keep issued tokens and revisions here")
    parser.add_argument("--until-stdin-closes", action="store_true", help="stop (saving) when stdin closes")
    args = parser.parse_args()
    try:
        control = Control(startup_faults=startup_faults(args.faults, os.environ))
    except ValueError as error:
        parser.error(str(error))
    app = create_app(today=args.today, control=control)
    sandbox_file = None
    if args.state_file is not None:
        sandbox_file = persistence.SandboxFile(app.extensions[EXTENSION], args.state_file)
        _say_what_was_restored(sandbox_file.restore())
        app.extensions[persistence.EXTENSION] = sandbox_file
    server = make_server("127.0.0.1", args.port, app, threaded=True)
    stopping = threading.Lock()

    def stop(*_: Any) -> None:
        # The last save, then exit at once, as the local moto does: not server.shutdown(), which waits
        # for serve_forever's poll to time out, and under libfaketime (the suite runs under it) that
        # timeout never comes. Request threads are daemons; nothing of theirs needs waiting for.
        if not stopping.acquire(blocking=False):
            return  # already stopping
        code = 0
        if sandbox_file is not None:
            try:
                sandbox_file.save_if_changed()
            except OSError as error:
                print(f"could not save the sandbox's state to {sandbox_file.path}: {error}", flush=True)
                code = 1
        sys.stdout.flush()
        os._exit(code)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if args.until_stdin_closes:
        threading.Thread(target=_call_when_stdin_closes, args=(stop,), daemon=True).start()
    if sandbox_file is not None:
        threading.Thread(target=sandbox_file.keep_saving, daemon=True).start()
    print(f"mock provider listening on http://127.0.0.1:{server.server_port}", flush=True)
    server.serve_forever()


def _call_when_stdin_closes(stop: Any) -> None:
    while sys.stdin.buffer.read(65536):
        pass
    stop()


def _say_what_was_restored(report: dict[str, Any]) -> None:
    if report["problem"]:
        print(f"could not restore the sandbox's state from {report['file']}: {report['problem']}", flush=True)
    elif report["found"]:
        print(f"restored the sandbox's state from {report['file']}: {report['restored']}", flush=True)


if __name__ == "__main__":
    main()
