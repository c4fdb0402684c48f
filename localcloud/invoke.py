"""``make invoke FUNCTION=<LogicalId> EVENT=events/<file>.json``: one event through one real handler.

The Docker-free counterpart of ``sam local invoke``, against the cloud ``make run`` started. The
samples in events/ carry placeholders that are filled from the demo user: REPLACE_WITH_USER_ID,
REPLACE_WITH_ACCOUNT_ID (the demo's first linked account) and REPLACE_WITH_ACCESS_TOKEN (a fresh login).
Without a running local cloud it says so at once (exit code 1) instead of waiting on botocore's retries.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from localcloud.cloud import CloudConfig, LocalCloud, function_environment
from localcloud.demo import DEMO_EMAIL
from localcloud.runtime import FunctionRuntime
from localcloud.template import ROOT


def _demo_placeholders(cloud: LocalCloud, table: str, runtimes: dict[str, FunctionRuntime]) -> dict[str, str]:
    dynamodb = cloud.client("dynamodb")
    email = dynamodb.get_item(TableName=table, Key={"PK": {"S": f"EMAIL#{DEMO_EMAIL}"}, "SK": {"S": "EMAIL"}})
    if "Item" not in email:
        return {}
    user_id = email["Item"]["user_id"]["S"]
    accounts = dynamodb.query(
        TableName=table,
        KeyConditionExpression="PK = :pk AND begins_with(SK, :prefix)",
        ExpressionAttributeValues={":pk": {"S": f"USER#{user_id}"}, ":prefix": {"S": "ACCOUNT#"}},
    )["Items"]
    login = runtimes["AuthFunction"].invoke(json.loads((ROOT / "events" / "auth_login.json").read_text()))
    values = {"REPLACE_WITH_USER_ID": user_id, "REPLACE_WITH_ACCESS_TOKEN": json.loads(login["body"])["access_token"]}
    if accounts:
        values["REPLACE_WITH_ACCOUNT_ID"] = accounts[0]["account_id"]["S"]
    return values


def answers(url: str, timeout: float = 1.0) -> bool:
    """Whether anything accepts a connection at ``url``'s host and port."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def main() -> None:
    logical_id, event_path = sys.argv[1:3]
    cloud = LocalCloud(CloudConfig.from_environ(dict(os.environ)))
    specs = {spec.logical_id: spec for spec in cloud.specs}
    if logical_id not in specs:
        sys.exit(f"unknown function {logical_id!r}; the template has: {', '.join(sorted(specs))}")
    if not answers(cloud.endpoint_url):
        sys.exit(
            f"The local cloud is not running: nothing answers at {cloud.endpoint_url}.\n"
            "Start it with `make run` in another terminal, then run `make invoke` again."
        )
    stack = cloud.provision()
    cloud.config.log_dir.mkdir(parents=True, exist_ok=True)
    aws = cloud.aws_environment()
    runtimes = {
        name: FunctionRuntime(specs[name], function_environment(stack, specs[name], aws), cloud.config.log_dir)
        for name in {"AuthFunction", logical_id}
    }
    try:
        text = Path(event_path).read_text()
        for placeholder, value in _demo_placeholders(cloud, stack.refs["BillsTable"], runtimes).items():
            text = text.replace(placeholder, value)
        result: Any = runtimes[logical_id].invoke(json.loads(text))
        if isinstance(result, dict) and isinstance(result.get("body"), str):
            with contextlib.suppress(ValueError):
                result["body"] = json.loads(result["body"])
        print(json.dumps(result, indent=2))
    finally:
        for runtime in runtimes.values():
            runtime.stop()


if __name__ == "__main__":
    main()
