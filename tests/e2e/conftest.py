from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.processes import Platform, platform


@pytest.fixture
def live_platform(transactional_db: None, tmp_path: Path) -> Iterator[Platform]:
    """daphne + qcluster + scheduler on the test database (data must be committed)."""
    with platform(tmp_path, "web", "worker", "scheduler") as p:
        yield p
