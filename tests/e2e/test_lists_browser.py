"""The runs list, overview and usage pages in a real browser against live daphne + qcluster +
scheduler: filters land in the URL and survive a reload, live rows respect the filters, the
Live badge leaves a run when it ends (list and run page), and the charts render. Fails on any
failed same-origin request or JavaScript error. Screenshots at 1280 and 390 px."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.utils import timezone

from runs.models import Run
from runs.services import create_graph_version, create_run, decide_approval
from tenants.limits import record_usage
from tests.e2e.browser import (  # noqa: F401 - the fixture overrides the suite's
    PASSWORD,
    SHOTS,
    _fast_password_hashing,
    chromium_context,
    require_browser,
)
from tests.factories import make_tenant, make_user
from tests.runs.conftest import approval_spec, chain_spec

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

require_browser()


@pytest.fixture
def watched(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, list[str]]]:
    """A page at 1280 px, and the list of problems seen on it (failed requests, JS errors)."""
    with chromium_context(monkeypatch, width=1280, height=900) as context:
        page = context.new_page()
        page.set_default_timeout(30_000)
        problems: list[str] = []

        def same_origin(url: str) -> bool:
            return url.startswith(("http://127.0.0.1", "http://localhost"))

        page.on("pageerror", lambda exc: problems.append(f"pageerror: {exc}"))
        page.on(
            "console",
            lambda msg: (
                problems.append(f"console: {msg.text} at {msg.location.get('url')}")
                if msg.type == "error"
                else None
            ),
        )
        page.on(
            "requestfailed",
            lambda req: (
                problems.append(f"failed: {req.url} {req.failure}")
                # A fetch cut short by navigating away is not a failure.
                if same_origin(req.url) and "ERR_ABORTED" not in str(req.failure)
                else None
            ),
        )
        page.on(
            "response",
            lambda r: (
                problems.append(f"{r.status}: {r.url}")
                if r.status >= 400 and same_origin(r.url)
                else None
            ),
        )
        yield page, problems


def query_of(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


def shoot(page: Any, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"runyard_{name}_1280.png"), full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})
    page.screenshot(path=str(SHOTS / f"runyard_{name}_390.png"), full_page=True)
    # Nothing but the charts' own scroll boxes may be wider than the phone's screen.
    overflow = page.evaluate("document.documentElement.scrollWidth")
    page.set_viewport_size({"width": 1280, "height": 900})
    assert overflow <= 390, f"{name} is {overflow} px wide at 390 px"


def test_lists_filters_live_badges_and_charts(live_platform: Any, watched: Any) -> None:
    page, problems = watched
    tenant = make_tenant("lists-co", daily_token_budget=4000)
    user = make_user("lists@example.com", tenant=tenant, password=PASSWORD)
    create_graph_version(tenant, chain_spec())
    create_graph_version(tenant, approval_spec())
    done = create_run(tenant, graph="chain", metadata={"customer": "acme"})
    gate = create_run(tenant, graph="approve", metadata={"customer": "acme"})
    today = timezone.now().date()
    for days, tokens in ((0, 1800), (1, 5200), (3, 900), (12, 2500)):
        # Added to the day's ledger (its runs' shards may hold today's row already).
        record_usage(
            tenant.pk,
            day=today - dt.timedelta(days=days),
            tokens_in=tokens // 2,
            tokens_out=tokens // 2,
            cost_usd=Decimal(tokens) / 100000,
        )
    base = live_platform.url

    page.goto(f"{base}/login/?next=/runs/")
    page.fill("#id_username", user.username)
    page.fill("#id_password", PASSWORD)
    page.click("#login-form button[type=submit]")
    page.wait_for_url(f"{base}/runs/")
    try:  # the first runs wait for a worker process on a busy machine: allow it a minute
        page.wait_for_selector(
            f'tr[data-run="{gate.public_id.hex}"][data-status="waiting"]', timeout=60_000
        )
    except Exception as exc:
        gate.refresh_from_db()
        log = live_platform.log("worker")[-3000:]
        raise AssertionError(f"run {gate.status}; {problems}; worker log: {log}") from exc
    page.wait_for_selector(f'tr[data-run="{done.public_id.hex}"][data-status="succeeded"]')

    # Filters go into the URL (empty ones stay out), and a reload shows the same view.
    page.select_option("#f-graph", "approve")
    page.wait_for_url(re.compile(r"graph=approve"))
    page.fill("#f-q", "acme")
    page.press("#f-q", "Enter")
    page.wait_for_url(re.compile(r"q=acme"))
    assert query_of(page.url) == {"graph": ["approve"], "q": ["acme"]}
    page.reload()
    assert page.input_value("#f-graph") == "approve" and page.input_value("#f-q") == "acme"
    rows = page.locator("#run-rows tr[data-run]")
    assert rows.count() == 1 and rows.first.get_attribute("data-run") == gate.public_id.hex
    # Back goes to the previous filter (graph only), forward returns to this one.
    page.go_back()
    page.wait_for_url(re.compile(r"/runs/\?graph=approve$"))
    assert page.input_value("#f-graph") == "approve" and page.input_value("#f-q") == ""
    page.go_forward()
    page.wait_for_url(re.compile(r"q=acme"))
    assert page.input_value("#f-q") == "acme"
    page.wait_for_selector('#live-indicator[data-live="on"]')

    # Live rows match the filters: a new `chain` run stays out, a new `approve` run comes in.
    create_run(tenant, graph="chain", metadata={"customer": "acme"})
    newer = create_run(tenant, graph="approve", metadata={"customer": "acme"})
    page.wait_for_selector(f'tr[data-run="{newer.public_id.hex}"][data-status="waiting"]')
    assert rows.count() == 2
    shoot(page, "runs_filtered")

    # The Live badge leaves a run's row when it ends.
    gate_row = f'tr[data-run="{gate.public_id.hex}"]'
    page.wait_for_selector(f'{gate_row} [data-role="live"]')
    decide_approval(Run.objects.get(pk=gate.pk), "gate@1", decision="approve", by="test")
    page.wait_for_selector(f'{gate_row}[data-status="succeeded"]')
    page.wait_for_selector(f'{gate_row} [data-role="live"]', state="detached")
    assert page.locator(f'tr[data-run="{newer.public_id.hex}"] [data-role="live"]').count() == 1

    # ... and the run page's header, whose indicator then says the run ended.
    page.goto(f"{base}/runs/{newer.public_id}/")
    page.wait_for_selector("#run-live-badge")
    page.wait_for_selector('#live-indicator[data-live="on"]')
    decide_approval(Run.objects.get(pk=newer.pk), "gate@1", decision="reject", by="test")
    page.wait_for_selector('#run-status[data-status="succeeded"]')
    page.wait_for_selector("#run-live-badge", state="detached")
    page.wait_for_selector('#live-indicator[data-live="ended"]')

    # Overview: counts and the stacked chart of runs per hour.
    page.click('nav a[href="/overview/"]')
    page.wait_for_selector("#runs-chart svg[role=img]")
    assert page.locator('#status-counts a[data-status="succeeded"]').get_attribute(
        "data-count"
    ) == str(Run.objects.filter(tenant=tenant, status="succeeded").count())
    assert page.locator("#runs-chart rect.chart-bar").count() >= 1
    shoot(page, "overview")

    # Usage: tokens per day with the daily budget line.
    page.click('nav a[href="/usage/"]')
    page.wait_for_selector("#chart-tokens svg[role=img]")
    assert page.locator("#chart-tokens rect.chart-bar").count() == 30
    assert page.locator("#chart-tokens g.chart-budget").count() == 1
    box = page.locator("#chart-tokens svg").bounding_box()
    assert box and box["width"] >= 500 and box["height"] >= 150
    shoot(page, "usage")
    assert problems == [], problems
