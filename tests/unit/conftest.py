from __future__ import annotations

from datetime import date

import pytest
from flask.testing import FlaskClient

from mock_provider.app import create_app
from mock_provider.control import Control

SANDBOX_TODAY = date(2026, 11, 15)


class FakeClock:
    """The sandbox's clock, moved by hand so token and code expiry need no waiting."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def client(clock: FakeClock) -> FlaskClient:
    """The sandbox app on a fake clock, driven in process through Flask's test client."""
    return create_app(today=SANDBOX_TODAY, control=Control(clock=clock)).test_client()
