"""``make remind [EMAIL=<address>]`` (``python -m localcloud.remind [EMAIL]``): makes a user's daily reminder
due now in the running local cloud (the demo user's by default), so the reminders' next scheduled run,
within ``LOCALCLOUD_SCHEDULE_SECONDS``, sends it rather than the next 08:00 UTC. The email, if any of the
user's bills is due soon or overdue and they have reminders on, then shows at
``GET <moto>/_localcloud/emails``; the events announce only bills not announced before.
"""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime

from localcloud.cloud import CloudConfig, LocalCloud
from localcloud.demo import DEMO_EMAIL
from localcloud.invoke import answers
from localcloud.runtime import LAYER_DIR


def main() -> None:
    email = sys.argv[1] if len(sys.argv) > 1 else DEMO_EMAIL
    cloud = LocalCloud(CloudConfig.from_environ(dict(os.environ)))
    if not answers(cloud.endpoint_url):
        sys.exit(f"The local cloud is not running: nothing answers at {cloud.endpoint_url}. Start it with `make run`.")
    stack = cloud.provision()
    # The layer's store, as the functions have it (the local cloud's own process does not import it otherwise).
    if str(LAYER_DIR) not in sys.path:
        sys.path.insert(0, str(LAYER_DIR))
    from billhub.store import BillsTable

    table = BillsTable(cloud.client("dynamodb"), stack.refs["BillsTable"])
    user_id = table.users.user_id_for_email(email)
    if user_id is None or not table.reminders.reschedule_reminder(user_id, datetime.now(UTC)):
        sys.exit(f"No user {email!r} (or they are being deleted).")
    print(
        f"{email}'s reminder is due now: the next run of the reminders (every {cloud.config.schedule_seconds:g} s) "
        f"sends it. Sent mail: {cloud.endpoint_url}/_localcloud/emails"
    )


if __name__ == "__main__":
    main()
