"""``python -m mock_provider [--port N] [--today YYYY-MM-DD]``: serve the sandbox on 127.0.0.1."""

from __future__ import annotations

import argparse
import contextlib
from datetime import date

from werkzeug.serving import make_server

from mock_provider.app import create_app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8300)
    parser.add_argument("--today", type=date.fromisoformat, default=None, help="pin the sandbox's date")
    args = parser.parse_args()
    server = make_server("127.0.0.1", args.port, create_app(today=args.today), threaded=True)
    print(f"mock provider listening on http://127.0.0.1:{server.server_port}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


if __name__ == "__main__":
    main()
