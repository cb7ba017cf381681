"""Shared setup of the browser tests: Debian's chromium driven by Playwright.

`sync_api = require_browser()` at a test module's top skips the module cleanly when playwright
or chromium is missing. Import `_fast_password_hashing` into the module too: it overrides the
suite's MD5 hasher, because daphne (its own process) checks passwords with the default hashers.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path(os.environ.get("RUNYARD_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
PASSWORD = "pw-123456789"  # noqa: S105 - a test user's password
SHOTS = Path(os.environ.get("RUNYARD_SCREENSHOTS", "/tmp"))  # noqa: S108


def require_browser() -> Any:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed", allow_module_level=True)
    return sync_api


@pytest.fixture(autouse=True)
def _fast_password_hashing() -> None:
    """Keeps Django's default hashers (overrides tests/conftest.py's fixture of this name)."""
