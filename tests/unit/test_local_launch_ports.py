"""The local cloud's ports come from below the kernel's ephemeral range, so a restart on the same ports
cannot find one taken by some outgoing connection's source port."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from localcloud import launch


def test_a_free_port_is_below_the_ephemeral_range_and_bindable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a kernel handing out source ports from 30000 up
    ranges = tmp_path / "ip_local_port_range"
    ranges.write_text("30000\t60999\n")
    monkeypatch.setattr(launch, "EPHEMERAL_RANGE_FILE", ranges)
    # When ports are picked
    ports = {launch.free_port() for _ in range(20)}
    # Then each is below it, above the privileged ones, and free to listen on
    assert all(launch.LISTEN_PORTS.start <= port < 30000 for port in ports), ports
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", ports.pop()))


def test_a_port_in_use_is_never_picked(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given two candidate ports, one listened on and one free (not merely the busy one's neighbour,
    # which anything on the machine may hold)
    with socket.socket() as taken, socket.socket() as probe:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
        probe.close()
        monkeypatch.setattr(launch, "_listen_ports", lambda: [busy, free])
        # When ports are picked, Then the listened one never is
        assert {launch.free_port() for _ in range(20)} == {free}


def test_an_unreadable_range_falls_back_to_the_default_ports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launch, "EPHEMERAL_RANGE_FILE", tmp_path / "missing")
    assert launch.LISTEN_PORTS.start <= launch.free_port() < launch.LISTEN_PORTS.stop
