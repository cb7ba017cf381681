"""The step inspector in a real browser against a live daphne: a run of a small graph (a
transform, a scripted llm, a transform) is opened; a click on a step row shows its prompt,
output and state diff; Enter on a focused row, a click on a graph node and Enter on a focused
node open theirs; Escape closes; ?step= deep-links; the panel is full width at 390 px. No
same-origin request fails and no JavaScript error happens on the way.

Debian's chromium driven by Playwright (skipped without them). The run executes in this test
process (InlineQueue), so only the web process is started.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from runs import dispatch
from runs.models import Run, Step
from runs.services import create_graph_version, create_run
from runs.status import RunStatus
from tests.e2e.browser import (  # noqa: F401 - the fixture overrides the suite's
    SHOTS,
    _fast_password_hashing,
    chromium_context,
    require_browser,
)
from tests.e2e.processes import Platform, platform
from tests.factories import make_tenant, make_user
from tests.runs.conftest import InlineQueue
from tests.runs.test_views__step_inspector import labelled_spec

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

require_browser()  # skips the module without playwright or chromium


@pytest.fixture
def web(transactional_db: None, tmp_path: Path) -> Iterator[Platform]:
    with platform(tmp_path, "web") as p:
        yield p


class Problems:
    """Failed same-origin requests and JavaScript errors seen by a page."""

    # The site serves no favicon yet (base.html names none, so the browser asks for
    # /favicon.ico): not this page's failure, and reported to be fixed site-wide.
    IGNORED = ("/favicon.ico",)

    def __init__(self, page: Any, base: str) -> None:
        self.items: list[str] = []
        self.base = base
        page.on("pageerror", lambda exc: self.items.append(f"pageerror: {exc}"))
        page.on(
            "console",
            lambda msg: (
                self.items.append(f"console: {msg.text} at {msg.location}")
                if msg.type == "error"
                else None
            ),
        )
        page.on(
            "requestfailed",
            lambda req: (
                self.items.append(f"failed: {req.url} {req.failure}")
                if req.url.startswith(base)
                else None
            ),
        )
        page.on(
            "response",
            lambda res: (
                self.items.append(f"{res.status}: {res.url}")
                if res.url.startswith(base) and res.status >= 400
                else None
            ),
        )

    def real(self) -> list[str]:
        return [p for p in self.items if not any(self.base + i in p for i in self.IGNORED)]


def wait_step(page: Any, index: int) -> None:
    page.wait_for_selector(f'#step-inspector:not([hidden]) .insp[data-inspect-step="{index}"]')


def labelled_run(monkeypatch: pytest.MonkeyPatch, slug: str) -> tuple[Run, Client]:
    """A finished run of the labelled graph (executed in this process) and a client logged in
    as a member of its tenant."""
    queue = InlineQueue()
    monkeypatch.setattr(dispatch, "enqueue_run", queue.put)
    tenant = make_tenant(slug)
    user = make_user(f"{slug}@example.com", tenant=tenant)
    create_graph_version(tenant, labelled_spec())
    run = create_run(tenant, graph="label", input={"text": "I was charged twice"})
    queue.drain()
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, run.error
    client = Client()
    client.force_login(user)
    return run, client


@contextmanager
def logged_in_page(
    monkeypatch: pytest.MonkeyPatch, client: Client, base: str
) -> Iterator[tuple[Any, Problems]]:
    with chromium_context(monkeypatch, width=1280, height=900) as context:
        context.add_cookies(
            [{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": base}]
        )
        page = context.new_page()
        page.set_default_timeout(15_000)
        yield page, Problems(page, base)


def test_steps_and_nodes_open_the_inspector_by_mouse_and_keyboard(
    web: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    run, client = labelled_run(monkeypatch, "insp-co")
    steps = {s.node: s.index for s in Step.objects.filter(run=run)}
    base = web.url
    url = f"{base}/runs/{run.public_id}/"

    with logged_in_page(monkeypatch, client, base) as (page, problems):
        page.goto(url)
        assert page.locator("#step-inspector").is_hidden()

        # A click on a step row: the llm step's prompt, output and state diff.
        page.click(f'#panel-timeline tr[data-step="{steps["ask"]}"] td:nth-child(2)')
        wait_step(page, steps["ask"])
        panel = page.locator("#step-inspector")
        prompt = panel.locator('[data-section="prompt"]').inner_text()
        assert "You label support tickets." in prompt
        assert "Label this: I was charged twice" in prompt
        assert '"billing"' in panel.locator('[data-section="output"]').inner_text()
        diff = panel.locator('[data-section="diff"] [data-path="label"]')
        assert diff.get_attribute("data-op") == "changed" and "billing" in diff.inner_text()
        assert "label.txt" in panel.locator('[data-section="artifacts"]').inner_text()
        assert page.url.endswith(f"?step={steps['ask']}")
        row = page.locator(f'#panel-timeline tr[data-step="{steps["ask"]}"]')
        assert "is-inspected" in (row.get_attribute("class") or "")
        page.screenshot(path=str(SHOTS / "runyard_step_inspector_1280.png"))

        # Escape closes it and gives the focus back to the row.
        page.keyboard.press("Escape")
        page.wait_for_selector("#step-inspector", state="hidden")
        assert page.url == url
        # The row has it back, and keeps it if a live update renders the timeline again.
        page.wait_for_function(
            "step => document.activeElement.getAttribute('data-step') === step",
            arg=str(steps["ask"]),
            timeout=2000,
        )

        # Enter on a focused row.
        page.focus(f'#panel-timeline tr[data-step="{steps["tidy"]}"]')
        page.keyboard.press("Enter")
        wait_step(page, steps["tidy"])
        entries = page.locator('#step-inspector [data-section="diff"] [data-op="removed"]')
        assert entries.first.get_attribute("data-path") == "meta.nested.y"
        entries.first.scroll_into_view_if_needed()
        page.screenshot(path=str(SHOTS / "runyard_step_inspector_diff_1280.png"))
        # The panel's own links move to the neighbouring step.
        page.click(f'#step-inspector [data-inspect-step-link="{steps["ask"]}"]')
        wait_step(page, steps["ask"])
        page.keyboard.press("Escape")
        page.wait_for_selector("#step-inspector", state="hidden")

        # A click on a graph node opens that node's latest step; Enter on a focused node too.
        page.click('#run-diagram .dg-node[data-node="prep"]')
        wait_step(page, steps["prep"])
        assert (
            "Initial state" in page.locator('#step-inspector [data-section="input"]').inner_text()
        )
        page.keyboard.press("Escape")
        page.wait_for_selector("#step-inspector", state="hidden")
        page.focus('#run-diagram .dg-node[data-node="ask"]')
        page.keyboard.press("Enter")
        wait_step(page, steps["ask"])
        page.keyboard.press("Escape")
        page.wait_for_selector("#step-inspector", state="hidden")

        # A deep link opens the inspector on load; at 390 px it takes the whole width.
        page.set_viewport_size({"width": 390, "height": 844})
        page.goto(f"{url}?step={steps['ask']}")
        wait_step(page, steps["ask"])
        box = page.locator("#step-inspector").bounding_box()
        assert box is not None and box["x"] == 0 and box["width"] == 390
        scroll_width = page.evaluate(
            "document.querySelector('#step-inspector .inspector-body').scrollWidth"
        )
        assert scroll_width <= 390, "the panel scrolls sideways at 390 px"
        page.screenshot(path=str(SHOTS / "runyard_step_inspector_390.png"))
        page.locator('#step-inspector [data-section="diff"]').scroll_into_view_if_needed()
        page.screenshot(path=str(SHOTS / "runyard_step_inspector_390_diff.png"))
        page.click("#step-inspector [data-inspector-close]")
        page.wait_for_selector("#step-inspector", state="hidden")
        assert re.fullmatch(re.escape(url), page.url)

        assert problems.real() == [], problems.real()
    assert Run.objects.get(pk=run.pk).status == RunStatus.SUCCEEDED


def test_a_live_snapshot_that_changes_nothing_keeps_the_rows_a_click_lands_on(
    web: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The page asks for a snapshot as its live stream connects; drawing the same timeline
    again replaced the row under a click that came at that moment (the click was lost)."""
    run, client = labelled_run(monkeypatch, "keep-co")
    base = web.url

    with logged_in_page(monkeypatch, client, base) as (page, problems):
        held: list[Any] = []
        page.route(
            f"**/runs/{run.public_id}/live/**",
            lambda route: route.continue_() if held else held.append(route),
        )
        page.goto(f"{base}/runs/{run.public_id}/")
        for _ in range(200):  # the snapshot's request, held until the rows are marked
            if held:
                break
            page.wait_for_timeout(25)
        assert held, "the page never asked for a snapshot"
        page.evaluate(
            """() => {
              document.querySelector('#panel-timeline tr[data-step]').kept = true;
              window.snapshotApplied = new Promise(
                done => document.addEventListener('runyard:snapshot', done, {once: true}));
            }"""
        )
        held[0].continue_()
        page.evaluate("() => window.snapshotApplied")
        kept = "() => document.querySelector('#panel-timeline tr[data-step]').kept === true"
        assert page.evaluate(kept), "an unchanged timeline was drawn again"
        assert problems.real() == [], problems.real()
