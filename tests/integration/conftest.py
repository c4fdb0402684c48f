from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import pytest

from localcloud.provision import Stack
from tests.integration.harness import Api


@pytest.fixture
def api(load_handler: Callable[[str], ModuleType], stack: Stack) -> Api:
    return Api(load_handler, stack)
