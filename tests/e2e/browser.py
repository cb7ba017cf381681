"""Shared setup of the browser tests: Debian's chromium driven by Playwright.

`require_browser()` at a test module's top skips the module cleanly when playwright or chromium
is missing; a page fixture opens its pages in `chromium_context`. Import `_fast_password_hashing`
into the module too: it overrides the suite's MD5 hasher, because daphne (its own process)
checks passwords with the default hashers.

Every page opened in `chromium_context` is watched (`PageWatch`): a request to the platform
answered with status >= 400 or failing outright, an uncaught JavaScript error or a console
error fails the test when the context closes (or earlier, at `watch_of(context).check()`).
A test that provokes an error on purpose allows it first: `watch_of(context).allow(r"/runs/")`.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable, Iterator
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


class PageWatch:
    """What went wrong on the pages it watches: failed requests and JavaScript errors.

    "Same origin" is every http(s) URL: the tests have no network, so every request a page
    makes goes to the platform under test. A request aborted by the page itself navigating
    away (net::ERR_ABORTED) is the browser's doing, not a failure.
    """

    def __init__(self, allow: Iterable[str] = ()) -> None:
        self.problems: list[str] = []
        self.allowed = [re.compile(p) for p in allow]

    def allow(self, *patterns: str) -> None:
        """Accept errors whose URL or text matches one of these regular expressions."""
        self.allowed += [re.compile(p) for p in patterns]

    def attach(self, page: Any) -> Any:
        page.on("response", self._on_response)
        page.on("requestfailed", self._on_request_failed)
        page.on("pageerror", lambda exc: self._add(f"JavaScript error on {page.url}: {exc}"))
        page.on("console", lambda msg: self._on_console(page, msg))
        return page

    def check(self) -> None:
        """Fail with every problem seen since the last check, then start afresh."""
        problems, self.problems = self.problems, []
        assert not problems, "problems on the pages visited:\n" + "\n".join(problems)

    def _add(self, problem: str) -> None:
        if not any(p.search(problem) for p in self.allowed):
            self.problems.append(problem)

    def _on_response(self, response: Any) -> None:
        if response.status >= 400 and response.url.startswith("http"):
            request = response.request
            self._add(f"{response.status} for {request.method} {response.url}")

    def _on_request_failed(self, request: Any) -> None:
        error = request.failure or ""
        if request.url.startswith("http") and "ERR_ABORTED" not in error:
            self._add(f"request failed ({error}): {request.method} {request.url}")

    def _on_console(self, page: Any, msg: Any) -> None:
        if msg.type == "error":
            where = msg.location.get("url") or page.url
            self._add(f"console error on {page.url} ({where}): {msg.text}")


_WATCHES: dict[int, PageWatch] = {}


def watch_of(context: Any) -> PageWatch:
    """The PageWatch of a context made by `chromium_context`."""
    return _WATCHES[id(context)]


@contextlib.contextmanager
def chromium_context(
    monkeypatch: pytest.MonkeyPatch, width: int, height: int, allow: Iterable[str] = ()
) -> Iterator[Any]:
    """A browser context in Debian's chromium, for a page fixture to open pages in; it fails
    the test on a failed request or JavaScript error on any of its pages (see PageWatch)."""
    # Playwright's sync API keeps an event loop on this thread; the test's own ORM calls in
    # between are plain blocking calls, which Django would otherwise refuse next to a loop.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    sync_api = require_browser()
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": width, "height": height})
        watch = _WATCHES[id(context)] = PageWatch(allow)
        context.on("page", watch.attach)
        try:
            yield context
            watch.check()
        finally:
            _WATCHES.pop(id(context), None)
            context.close()
            browser.close()
            # With Playwright's loop on this thread, Django keys connections differently, so the
            # test's ORM calls used a connection of their own: close it, or it outlives the
            # test and blocks dropping the PostgreSQL test database.
            connections.close_all()


@pytest.fixture(autouse=True)
def _fast_password_hashing() -> None:
    """Keeps Django's default hashers (overrides tests/conftest.py's fixture of this name)."""
