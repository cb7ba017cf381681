from __future__ import annotations

from collections.abc import Iterator

import pytest

from .helpers import LocalServer


@pytest.fixture
def server() -> Iterator[LocalServer]:
    """A tiny HTTP server on 127.0.0.1 (routes added per test)."""
    srv = LocalServer()
    yield srv
    srv.close()
