"""Every page a person meets, in the shipped configuration: daphne from platform/Procfile's web
line, DEBUG off, static files from `collectstatic` served by daphne itself (ServeStatic).

A member and an operator each visit every page; any failed request or JavaScript error fails
the test (tests/e2e/browser.py watches every page). The admin must have its CSS and the API
docs must render every operation from local assets. Screenshots of each page at 1280 and
390 px wide go to $RUNYARD_SCREENSHOTS (default /tmp) as runyard_page_<name>_<width>.png.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.conf import settings
from django.urls import reverse

from runs.models import Run
from runs.services import create_graph_version, create_run
from runs.status import TERMINAL, RunStatus
from tests.e2e.browser import (  # noqa: F401 - the fixture overrides the suite's
    PASSWORD,
    SHOTS,
    _fast_password_hashing,
    chromium_context,
    require_browser,
    watch_of,
)
from tests.factories import make_tenant, make_user

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

require_browser()  # skips the module without playwright or chromium

WIDTHS = (1280, 390)
EXAMPLES = Path(settings.BASE_DIR) / "examples" / "graphs"
OPERATIONS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


@pytest.fixture
def browser_context(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    with chromium_context(monkeypatch, width=1280, height=900) as context:
        context.set_default_timeout(20_000)
        yield context


def shoot(page: Any, name: str) -> None:
    """The page as it is now at each width (the layout follows the viewport on resize)."""
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900 if width > 600 else 844})
        page.wait_for_timeout(150)
        page.screenshot(path=str(SHOTS / f"runyard_page_{name}_{width}.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 900})


def visit(page: Any, url: str, ready: str, name: str | None = None) -> None:
    response = page.goto(url)
    assert response is not None and response.status == 200, (url, response and response.status)
    page.wait_for_selector(ready)
    page.wait_for_load_state("networkidle")
    if name:
        shoot(page, name)


def log_in(page: Any, base: str, user: Any, login_path: str, submit: str) -> None:
    page.goto(f"{base}{login_path}")
    page.fill("#id_username", user.username)
    page.fill("#id_password", PASSWORD)
    page.click(submit)
    page.wait_for_load_state("networkidle")


def finished_run(tenant: Any) -> Run:
    create_graph_version(tenant, json.loads((EXAMPLES / "support-triage.json").read_text()))
    run = create_run(tenant, graph="support-triage", input={"text": "My invoice charged me twice"})
    deadline = time.monotonic() + 30
    while run.status not in TERMINAL and time.monotonic() < deadline:
        time.sleep(0.2)
        run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, run.error
    return run


def dashboard_pages(base: str, run: Run, shots: bool) -> list[tuple[str, str, str | None]]:
    def name(n: str) -> str | None:
        return n if shots else None

    return [
        (f"{base}/runs/", "#main table, #main .empty", name("runs_list")),
        (f"{base}/runs/{run.public_id}/", "#run-status", name("run_detail")),
        (f"{base}/graphs/", "#main", name("graphs")),
        (f"{base}/graphs/support-triage/", "#main", name("graph_detail")),
        (f"{base}/usage/", "#main", name("usage")),
        (f"{base}/schedules/", "#main", name("schedules")),
        (f"{base}/webhooks/", "#main", name("webhooks")),
    ]


def check_api_docs(page: Any, base: str, shots: bool) -> None:
    spec = httpx.get(f"{base}/api/v1/openapi.json", timeout=10).json()
    operations = sum(len(OPERATIONS & set(item)) for item in spec["paths"].values())
    visit(page, f"{base}/api/v1/docs", ".opblock")
    page.wait_for_function(f"document.querySelectorAll('.opblock').length >= {operations}")
    assert page.locator(".opblock").count() == operations
    if shots:
        shoot(page, "api_docs")


def test_every_page_loads_cleanly_for_a_member_and_an_operator(
    live_platform: Any, browser_context: Any
) -> None:
    base = live_platform.url
    tenant = make_tenant("pages-co")
    member = make_user("member@example.com", tenant=tenant, password=PASSWORD)
    operator = make_user("operator@example.com", tenant=tenant, password=PASSWORD, staff=True)
    run = finished_run(tenant)
    page = browser_context.new_page()
    static_responses: dict[str, int] = {}
    page.on(
        "response",
        lambda r: static_responses.__setitem__(r.url.split(base, 1)[-1], r.status),
    )

    # A member: the login page, every dashboard page, the API docs, and a styled 404.
    visit(page, f"{base}/login/", "#login-form", "login")
    log_in(page, base, member, "/login/", "#login-form button[type=submit]")
    for url, ready, shot in dashboard_pages(base, run, shots=True):
        visit(page, url, ready, shot)
    check_api_docs(page, base, shots=True)
    watch_of(browser_context).allow(r"/no/such/page/")  # the 404 itself, on purpose
    assert page.goto(f"{base}/no/such/page/").status == 404
    page.wait_for_selector("#error-404")
    shoot(page, "not_found")
    watch_of(browser_context).check()
    page.context.clear_cookies()

    # An operator: the admin's pages, styled, and the dashboard and docs again.
    log_in(page, base, operator, "/admin/login/?next=/admin/", "input[type=submit]")
    admin_pages = [
        (reverse("admin:index"), "admin_index"),
        (reverse("admin:runs_run_changelist"), "admin_runs"),
        (reverse("admin:runs_run_change", args=[run.pk]), "admin_run"),
        (reverse("admin:tenants_tenant_changelist"), "admin_tenants"),
        (reverse("admin:runs_reconcile"), "admin_reconcile"),
        (reverse("admin:schedules_cron_changelist"), "admin_schedules"),
        (reverse("admin:webhooks_delivery_changelist"), "admin_webhook_deliveries"),
        (reverse("admin:triggers_receivedevent_changelist"), "admin_received_events"),
    ]
    for path, shot in admin_pages:
        visit(page, f"{base}{path}", "#content", shot)
        header = page.evaluate("getComputedStyle(document.querySelector('#header')).display")
        assert header == "flex", f"{path}: the admin's CSS did not apply"
    assert static_responses.get("/static/admin/css/base.css") == 200
    for url, ready, _ in dashboard_pages(base, run, shots=False):
        visit(page, url, ready)
    check_api_docs(page, base, shots=False)
    watch_of(browser_context).check()
