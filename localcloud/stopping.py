"""Waiting that a stop can cut short, and that also ends under libfaketime.

The suite runs under libfaketime at other dates, which fakes the monotonic clock too: a timed lock wait
(``Event.wait(5)``, ``Thread.join(5)``) computes its deadline on the faked clock and is handed to the
kernel as an absolute time on the real one, so it never wakes; nor does ``serve_forever``'s poll.
``time.sleep`` is a relative wait and does. So the local cloud's periodic work sleeps in short steps and
looks at the stop between them, and a server's shutdown is woken by a connection.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

from werkzeug.serving import BaseWSGIServer

STEP_SECONDS = 0.05


def sleep_unless_stopped(stopping: threading.Event, seconds: float) -> bool:
    """Sleeps ``seconds``, or less if ``stopping`` is set meanwhile; whether it was set."""
    deadline = time.monotonic() + seconds
    while not stopping.is_set():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(STEP_SECONDS, remaining))
    return True


def shut_down(server: BaseWSGIServer) -> None:
    """``server.shutdown()``, woken: ``serve_forever`` looks for a shutdown between polls of its socket,
    and under libfaketime a poll's timeout never comes, so connections of our own wake it."""
    stopper = threading.Thread(target=server.shutdown, name="server-shutdown", daemon=True)
    stopper.start()
    while stopper.is_alive():
        with contextlib.suppress(OSError):
            socket.create_connection((server.host, server.server_port), timeout=1).close()
        time.sleep(STEP_SECONDS)


def join_within(threads: list[threading.Thread], seconds: float) -> None:
    """Waits up to ``seconds`` in all for ``threads`` to end (``Thread.join(timeout)``, in steps)."""
    deadline = time.monotonic() + seconds
    while any(thread.is_alive() for thread in threads) and time.monotonic() < deadline:
        time.sleep(STEP_SECONDS)
