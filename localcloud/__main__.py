"""``make run`` (``python -m localcloud [--fresh]``): start the whole system locally and keep it up
until Ctrl-C. What it stores (users, accounts, bills, keys, the sandbox's tokens) is kept in
``.localcloud/data/`` across restarts; ``--fresh`` (``make run FRESH=1``) forgets it and starts empty.

Configuration (environment): LOCALCLOUD_GATEWAY_PORT (3000), LOCALCLOUD_MOTO_PORT (5005),
MOCK_PROVIDER_PORT (8300), AWS_ENDPOINT_URL (use that endpoint, e.g. LocalStack, instead of moto),
LOCALCLOUD_SCHEDULE_SECONDS (60), LOCALCLOUD_RETRY_DELAY_SECONDS (5, or "queue" for the queue's own
visibility timeout), LOCALCLOUD_SEED (1), LOCALCLOUD_DATA_DIR (.localcloud/data), LOCALCLOUD_STATE_FILE
(write the URLs there as JSON when up), LOCALCLOUD_DYNAMODB_FAULT_RATE (0), LOCALCLOUD_DYNAMODB_FAULTS
(every kind) and LOCALCLOUD_DYNAMODB_FAULT_SEED (0): moto's fault mode (localcloud/moto_faults.py),
LOCALCLOUD_WEBHOOK_RETRY_DELAYS ("2,4,8,16,32,64,128": seconds before each retry of a failed webhook
delivery, for the template's WebhookRetryDelaysSeconds, whose default spreads them over 27 hours).
Webhooks may point at loopback (http://127.0.0.1:<port>/...) here: the local cloud sets the template's
WebhookAllowLoopback.

Every template schedule (the planner's, the daily reminders') fires every LOCALCLOUD_SCHEDULE_SECONDS.
The mail moto's SES took (the daily reminders: what a user would get) is at
``GET <AWS (moto)>/_localcloud/emails``, newest first, as [{"to", "subject", "text", "html", "sent_at"}].
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import threading
import time
from pathlib import Path

from localcloud.cloud import CloudConfig, LocalCloud
from localcloud.demo import DEMO_EMAIL, DEMO_PASSWORD


def _state_lines(cloud: LocalCloud) -> str:
    data_dir = cloud.config.data_dir
    if data_dir is None:
        return "  state          not kept (no data directory)"
    notes = "; ".join(cloud.state_notes) or "nothing kept yet"
    lines = [
        f"  state          {notes}",
        f"                 kept in {data_dir} across restarts; `make run FRESH=1` or `make clean` starts empty",
    ]
    lines += [f"  WARNING        {problem}" for problem in cloud.state_problems]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description="Start billhub locally (moto, the mock provider, the API).")
    parser.add_argument("--fresh", action="store_true", help="forget the state kept from earlier runs; start empty")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    config = CloudConfig.from_environ(dict(os.environ))
    config.fresh = args.fresh
    cloud = LocalCloud(config)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    started = time.monotonic()
    try:
        cloud.start()
        state = {
            "api": cloud.gateway_url,
            "aws_endpoint": cloud.endpoint_url,
            "mock_provider": cloud.mock_provider_url,
            "logs": str(config.log_dir),
            "data": str(config.data_dir) if config.data_dir else None,
            "pids": cloud.server_pids(),
            "state_notes": cloud.state_notes,
            "state_problems": cloud.state_problems,
            "startup_seconds": round(time.monotonic() - started, 2),
        }
        state_file = os.environ.get("LOCALCLOUD_STATE_FILE")
        if state_file:
            Path(state_file).write_text(json.dumps(state))
        print(
            f"""
billhub is running locally (started in {state["startup_seconds"]} s)
  API            {cloud.gateway_url}
  API docs       {cloud.gateway_url}/docs (Swagger UI; the OpenAPI document is at /docs/openapi.json)
  AWS (moto)     {cloud.endpoint_url}
  mock provider  {cloud.mock_provider_url}
  logs           {config.log_dir}
  schedule       the planner and the reminders run every {config.schedule_seconds:g} s
  sent mail      {cloud.endpoint_url}/_localcloud/emails (the daily reminders, newest first)
{_state_lines(cloud)}

Demo login: {DEMO_EMAIL} / {DEMO_PASSWORD} (one account at each of the four sandbox providers is linked and refreshing)
  TOKEN=$(curl -s -X POST {cloud.gateway_url}/auth/login -H 'Content-Type: application/json' \\
    -d '{{"email": "{DEMO_EMAIL}", "password": "{DEMO_PASSWORD}"}}' \\
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
  curl -s {cloud.gateway_url}/bills -H "Authorization: Bearer $TOKEN"

Press Ctrl-C to stop.""",
            flush=True,
        )
        stopping.wait()
    finally:
        print("stopping...", flush=True)
        stopping_at = time.monotonic()
        cloud.stop()
        kept = f"; state kept in {config.data_dir}" if config.data_dir else ""
        print(f"stopped in {time.monotonic() - stopping_at:.1f} s{kept}", flush=True)


if __name__ == "__main__":
    main()
