"""An operator in a real browser: logs into the admin of a live daphne, cancels a running run
through the changelist action and its confirmation page, and sees it end `cancelled`; then
resolves orphaned runs from the reconciliation page.

Debian's chromium driven by Playwright's Python package (no `playwright install`); skipped
when either is missing.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from runs.models import Run
from runs.services import claim_run, create_graph_version, create_run
from runs.status import RunStatus
from runs.tasks import execute_run
from tests.e2e.browser import (  # noqa: F401 - the fixture overrides the suite's
    PASSWORD,
    SHOTS,
    _fast_password_hashing,
    chromium_context,
    require_browser,
)
from tests.e2e.processes import platform
from tests.factories import make_tenant, make_user
from tests.runs.conftest import approval_spec, slow_spec

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

require_browser()  # skips the module without playwright or chromium


@pytest.fixture
def browser_page(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    with chromium_context(monkeypatch, width=1500, height=950) as context:
        page = context.new_page()
        page.set_default_timeout(20_000)
        yield page


def log_in(page: Any, base: str, user: Any, next_path: str) -> None:
    page.goto(f"{base}/admin/login/?next={next_path}")
    page.fill("#id_username", user.username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"{base}{next_path}")


def wait_status(run: Run, statuses: set[str], timeout: float = 30) -> Run:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run.refresh_from_db()
        if run.status in statuses:
            return run
        time.sleep(0.1)
    raise AssertionError(f"run {run.public_id} still {run.status}")


def test_operator_cancels_a_running_run_from_the_changelist(
    live_platform: Any, browser_page: Any
) -> None:
    tenant = make_tenant("browser-co")
    operator = make_user("ops@example.com", staff=True, password=PASSWORD)
    create_graph_version(tenant, slow_spec(latency_ms=30_000))
    run = create_run(tenant, graph="slow")
    run = wait_status(run, {RunStatus.RUNNING})
    assert run.lease_owner  # a real worker holds it, inside the 30 s llm call

    page = browser_page
    log_in(page, live_platform.url, operator, "/admin/runs/run/")
    row = page.locator(f'tr:has(input[name="_selected_action"][value="{run.pk}"])')
    assert "running" in row.inner_text()
    page.screenshot(path=str(SHOTS / "runyard_admin_runs.png"), full_page=True)

    row.locator('input[name="_selected_action"]').check()
    page.select_option('select[name="action"]', "cancel_runs")
    page.click('button[name="index"]')
    page.wait_for_selector("#operation-form")
    assert str(run.public_id) in page.inner_text("#operation-runs")
    page.screenshot(path=str(SHOTS / "runyard_admin_cancel_confirm.png"), full_page=True)
    assert Run.objects.get(pk=run.pk).status == RunStatus.RUNNING  # only asked, so far
    page.check('input[name="cancel_action"][value="interrupt"]')
    page.fill('textarea[name="reason"]', "stuck on a slow model call")
    page.click('input[name="confirm"]')
    page.wait_for_selector("ul.messagelist")
    messages = page.inner_text("ul.messagelist")
    assert "Cancel: 1 changed" in messages and str(run.public_id) in messages

    # The worker aborts the in-flight call at once and ends the run.
    run = wait_status(run, {RunStatus.CANCELLED, RunStatus.FAILED, RunStatus.SUCCEEDED})
    assert run.status == RunStatus.CANCELLED, (run.error, live_platform.log("worker"))
    page.goto(f"{live_platform.url}/admin/runs/run/?q={run.public_id}")
    badge = page.locator(f'tr:has(input[value="{run.pk}"]) .run-status')
    assert badge.inner_text() == "cancelled"
    page.screenshot(path=str(SHOTS / "runyard_admin_runs_cancelled.png"), full_page=True)
    page.goto(f"{live_platform.url}/admin/runs/run/{run.pk}/change/")
    assert "run.cancelled" in page.inner_text("#events")
    page.screenshot(path=str(SHOTS / "runyard_admin_run_detail.png"), full_page=True)


def test_operator_resolves_orphans_from_the_reconcile_page(
    transactional_db: None, tmp_path: Path, browser_page: Any
) -> None:
    """daphne alone: no scheduler that would reconcile the orphans before the operator."""
    tenant = make_tenant("orphan-co")
    operator = make_user("ops2@example.com", staff=True, password=PASSWORD)
    create_graph_version(tenant, slow_spec(latency_ms=10))
    create_graph_version(tenant, approval_spec())
    past = timezone.now() - dt.timedelta(minutes=10)
    expired = create_run(tenant, graph="slow", metadata={"case": "worker died"})
    claim_run(expired.pk, worker="host-7:4242:1")
    Run.objects.filter(pk=expired.pk).update(lease_expires_at=past, heartbeat_at=past)
    lost = create_run(tenant, graph="slow", metadata={"case": "broker lost the task"})
    Run.objects.filter(pk=lost.pk).update(dispatched_at=past)
    overdue = create_run(tenant, graph="approve")
    assert execute_run(overdue.pk) == "waiting"  # in this process: it stops at the approval
    Run.objects.filter(pk=overdue.pk).update(wait_deadline=past)

    with platform(tmp_path, "web") as web:
        resolve_in_browser(browser_page, web.url, operator, expired)


def resolve_in_browser(page: Any, base: str, operator: Any, expired: Run) -> None:
    log_in(page, base, operator, "/admin/runs/reconcile/")
    table = page.inner_text("#reconcile-candidates")
    for text in ["host-7:4242:1", "lease expired", "dispatched, never claimed", "gate@1"]:
        assert text in table
    page.screenshot(path=str(SHOTS / "runyard_admin_reconcile.png"), full_page=True)

    page.fill('textarea[name="reason"]', "after the host-7 outage")
    page.click('input[name="resolve_all"]')
    page.wait_for_selector("#reconcile-results")
    results = page.inner_text("#reconcile-results")
    assert "requeued from the last checkpoint" in results
    assert "dispatched again" in results and "default reject applied" in results
    assert "Nothing to reconcile." in page.inner_text("#content-main")
    assert Run.objects.get(pk=expired.pk).recoveries == 1
