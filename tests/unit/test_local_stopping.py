"""The local servers' periodic waits end on time and at a stop, also under libfaketime (which the suite
runs under at other dates, and where ``Event.wait(seconds)`` never wakes)."""

from __future__ import annotations

import threading

from werkzeug.serving import make_server

from localcloud.stopping import shut_down, sleep_unless_stopped


def test_a_sleep_nobody_stops_runs_out() -> None:
    # Given nobody stops; then the sleep ends by itself, saying it was not stopped
    assert sleep_unless_stopped(threading.Event(), 0.2) is False


def test_a_stop_ends_the_sleep() -> None:
    # Given a stop while another thread sleeps for an hour
    stopping = threading.Event()
    outcome: list[bool] = []
    sleeper = threading.Thread(target=lambda: outcome.append(sleep_unless_stopped(stopping, 3600)))
    sleeper.start()
    stopping.set()
    # Then the sleeper ends at once, saying it was stopped (an untimed join: a timed one never ends under
    # libfaketime either, and a sleeper that missed the stop hangs the test visibly)
    sleeper.join()
    assert outcome == [True]


def test_a_server_shut_down_stops_serving() -> None:
    # Given a server serving in another thread, polling its socket every hour (which is how long
    # server.shutdown() alone would take; under libfaketime, forever)
    server = make_server("127.0.0.1", 0, lambda environ, start_response: [])
    serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 3600})
    serving.start()
    # When it is shut down; then serve_forever returns
    shut_down(server)
    serving.join()
    server.server_close()
