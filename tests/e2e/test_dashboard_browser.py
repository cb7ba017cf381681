"""A tenant member in a real browser against a live daphne + qcluster + scheduler: logs in,
starts a run of an approval graph from the graph page, watches its gate turn `waiting` on the
run page without a reload (websocket), approves, and sees the run end `succeeded` live; then
sees a new run appear on the runs list live.

Debian's chromium driven by Playwright's Python package (no `playwright install`); skipped
when either is missing. Screenshots go to $RUNYARD_SCREENSHOTS (default /tmp).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from runs.models import Run
from runs.services import create_graph_version, create_run
from runs.status import RunStatus
from tests.e2e.browser import (  # noqa: F401 - the fixture overrides the suite's
    PASSWORD,
    SHOTS,
    _fast_password_hashing,
    chromium_context,
    require_browser,
)
from tests.factories import make_tenant, make_user
from tests.runs.conftest import approval_spec

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

require_browser()  # skips the module without playwright or chromium


@pytest.fixture
def browser_page(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    with chromium_context(monkeypatch, width=1440, height=1000) as context:
        page = context.new_page()
        page.set_default_timeout(30_000)
        yield page


def slow_approval_spec() -> dict[str, Any]:
    """approval_spec with a slow first node, so the page is open before the gate is reached."""
    spec = approval_spec(name="review")
    spec["nodes"]["before"] = {
        "kind": "llm",
        "provider": "scripted",
        "prompt": "Summarise {{ state.ticket }}",
        "responses": ["summary of the ticket"],
        "latency_ms": 3500,
        "output": "summary",
    }
    return spec


def node(page: Any, name: str) -> Any:
    return page.locator(f'#run-diagram .dg-node[data-node="{name}"]')


def test_member_starts_approves_and_watches_a_run_live(
    live_platform: Any, browser_page: Any
) -> None:
    tenant = make_tenant("dash-co")
    user = make_user("dash@example.com", tenant=tenant, password=PASSWORD)
    create_graph_version(tenant, slow_approval_spec())
    base = live_platform.url
    page = browser_page

    # Dashboard pages need a login; the login page sends us back where we were going.
    page.goto(f"{base}/graphs/review/")
    page.wait_for_url(re.compile(r"/login/\?next="))
    page.fill("#id_username", user.username)
    page.fill("#id_password", PASSWORD)
    page.click("#login-form button[type=submit]")
    page.wait_for_url(f"{base}/graphs/review/")

    # Start a run from the graph page.
    page.fill("#id_input", '{"ticket": "Printer on fire"}')
    page.click("#start-button")
    page.wait_for_url(re.compile(r"/runs/[0-9a-f-]{36}/$"))
    run = Run.objects.get(tenant=tenant)
    assert page.url == f"{base}/runs/{run.public_id}/"
    page.evaluate("window.__sameDocument = true")
    assert node(page, "gate").get_attribute("data-state") == "pending"

    # The websocket turns the gate `waiting` (and brings the approve form) without a reload.
    page.wait_for_selector('#live-indicator[data-live="on"]')
    page.wait_for_selector('#run-diagram .dg-node[data-node="gate"][data-state="waiting"]')
    page.wait_for_selector("#approve-button")
    assert node(page, "before").get_attribute("data-state") == "completed"
    assert page.evaluate("window.__sameDocument") is True
    assert "approval.requested" in page.inner_text("#event-log")
    page.wait_for_selector('#run-status[data-status="waiting"]')
    page.screenshot(path=str(SHOTS / "runyard_dashboard_run_waiting.png"), full_page=True)

    # Approve; the run goes on in the worker and the page follows it to the end.
    page.click("#approve-button")
    page.wait_for_selector("#toasts .msg-success")
    page.wait_for_selector('#run-status[data-status="succeeded"]')
    for name in ("before", "gate", "after", "done"):
        page.wait_for_selector(f'#run-diagram .dg-node[data-node="{name}"][data-state="completed"]')
    assert node(page, "rejected").get_attribute("data-state") == "pending"
    assert page.evaluate("window.__sameDocument") is True
    assert "run.succeeded" in page.inner_text("#event-log")
    # The badge follows the event at once; panels follow one debounced refresh later.
    page.locator("#panel-controls").get_by_text("The run has ended").wait_for()
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, live_platform.log("worker")
    assert run.state["log"] == ["after"] and run.state["summary"] == "summary of the ticket"
    page.screenshot(path=str(SHOTS / "runyard_dashboard_run_detail.png"), full_page=True)

    # The runs list adds a run started elsewhere (here: by the API's service) live.
    page.goto(f"{base}/runs/")
    page.wait_for_selector(f'tr[data-run="{run.public_id.hex}"][data-status="succeeded"]')
    page.wait_for_selector('#live-indicator[data-live="on"]')
    page.evaluate("window.__sameDocument = true")
    other = create_run(tenant, graph="review", input={"ticket": "Second ticket"})
    page.wait_for_selector(f'tr[data-run="{other.public_id.hex}"]')
    page.wait_for_selector(f'tr[data-run="{other.public_id.hex}"][data-status="waiting"]')
    assert page.evaluate("window.__sameDocument") is True
    page.screenshot(path=str(SHOTS / "runyard_dashboard_runs.png"), full_page=True)

    # The graph list draws every graph.
    page.goto(f"{base}/graphs/")
    assert page.locator('.card[data-graph="review"] svg .dg-node').count() == 5
    page.screenshot(path=str(SHOTS / "runyard_dashboard_graphs.png"), full_page=True)
