"""Shared setup of the browser tests: Debian's chromium driven by Playwright.

`require_browser()` at a test module's top skips the module cleanly when playwright or chromium
is missing; a page fixture opens its pages in `chromium_context`. Import `_fast_password_hashing`
into the module too: it overrides the suite's MD5 hasher, because daphne (its own process)
checks passwords with the default hashers.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connections

CHROMIUM = Path(os.environ.get("RUNYARD_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
PASSWORD = "pw-123456789"  # noqa: S105 - a test user's password
SHOTS = Path(os.environ.get("RUNYARD_SCREENSHOTS", "/tmp"))  # noqa: S108


def require_browser() -> Any:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed", allow_module_level=True)
    return sync_api


@contextlib.contextmanager
def chromium_context(monkeypatch: pytest.MonkeyPatch, width: int, height: int) -> Iterator[Any]:
    """A browser context in Debian's chromium, for a page fixture to open pages in."""
    # Playwright's sync API keeps an event loop on this thread; the test's own ORM calls in
    # between are plain blocking calls, which Django would otherwise refuse next to a loop.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    sync_api = require_browser()
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": width, "height": height})
        try:
            yield context
        finally:
            context.close()
            browser.close()
            # With Playwright's loop on this thread, Django keys connections differently, so the
            # test's ORM calls used a connection of their own: close it, or it outlives the
            # test and blocks dropping the PostgreSQL test database.
            connections.close_all()


@pytest.fixture(autouse=True)
def _fast_password_hashing() -> None:
    """Keeps Django's default hashers (overrides tests/conftest.py's fixture of this name)."""
