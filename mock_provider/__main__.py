"""``python -m mock_provider [--port N] [--today YYYY-MM-DD] [--faults JSON]``: serve the sandbox on 127.0.0.1."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from collections.abc import Mapping
from datetime import date
from typing import Any

from werkzeug.serving import make_server

from mock_provider.app import create_app
from mock_provider.control import Control

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
    args = parser.parse_args()
    try:
        control = Control(startup_faults=startup_faults(args.faults, os.environ))
    except ValueError as error:
        parser.error(str(error))
    server = make_server("127.0.0.1", args.port, create_app(today=args.today, control=control), threaded=True)
    print(f"mock provider listening on http://127.0.0.1:{server.server_port}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


if __name__ == "__main__":
    main()
