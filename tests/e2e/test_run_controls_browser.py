"""Every control on the run page, in a real browser against a live daphne + qcluster +
scheduler: cancel (interrupt and rollback), pause and resume, approve with a state patch,
reject, input, guidance; a refused control keeps what was typed; and the ended-run controls:
Retry at the failed node, Resume of an interrupted run, Fork from a step of the timeline.

Each test fails on any failed same-origin request or JavaScript error, except the one refusal
the error test provokes on purpose.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runs.models import Run, Thread
from runs.services import (
    create_graph_version,
    create_run,
    create_thread,
    decide_approval,
    mark_interrupted,
)
from runs.status import RunStatus
from tests.e2e.browser import (  # noqa: F401 - the fixture overrides the suite's
    PASSWORD,
    SHOTS,
    _fast_password_hashing,
    chromium_context,
    require_browser,
    watch_of,
)
from tests.e2e.control_functions import gated_spec
from tests.e2e.processes import Platform, platform
from tests.factories import make_tenant, make_user
from tests.runs.conftest import approval_spec, slow_spec

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

require_browser()  # skips the module without playwright or chromium

# The page's live stream is up: "Live", or "Run ended" on a run that can no longer change.
LIVE = '#live-indicator:is([data-live="on"], [data-live="ended"])'

INPUT_SPEC = {
    "name": "ask",
    "start": "ask",
    "nodes": {
        "ask": {"kind": "input", "prompt": "Your name?", "output": "name"},
        "done": {"kind": "end"},
    },
    "edges": [{"from": "ask", "to": "done"}],
}


class Watch:
    """Failed same-origin requests and JavaScript errors seen by a page."""

    def __init__(self, page: Any, base: str) -> None:
        self.problems: list[str] = []
        self.allowed: list[tuple[int, str]] = []
        self.base = base
        self.leaving = False
        page.on("pageerror", lambda exc: self.problems.append(f"pageerror: {exc}"))
        page.on("console", self._console)
        page.on("response", self._response)
        page.on("requestfailed", self._failed)

    def allow(self, status: int, path_pattern: str) -> None:
        """Expect exactly one response with `status` to a URL matching `path_pattern`."""
        self.allowed.append((status, path_pattern))

    def _console(self, msg: Any) -> None:
        # The browser asks for /favicon.ico on its own (no page asks for it); the site has
        # none yet. Anything else on the console is the page's.
        if msg.type == "error" and not msg.location.get("url", "").endswith("/favicon.ico"):
            self.problems.append(f"console: {msg.text}")

    def _response(self, response: Any) -> None:
        if response.url.startswith(self.base) and response.status >= 400:
            self.problems.append(f"{response.status} {response.url}")

    def _failed(self, request: Any) -> None:
        # Leaving a page aborts its in-flight polls: that is the test navigating, not a fault.
        if self.leaving and request.failure == "net::ERR_ABORTED":
            return
        if request.url.startswith(self.base):
            self.problems.append(f"requestfailed {request.url}: {request.failure}")

    def check(self) -> None:
        problems = list(self.problems)
        for status, pattern in self.allowed:
            hits = [p for p in problems if p.startswith(f"{status} ") and re.search(pattern, p)]
            assert len(hits) == 1, (status, pattern, problems)
            problems.remove(hits[0])
            # Chrome reports a fetch answered >= 400 on the console too.
            console = [p for p in problems if p.startswith("console:") and str(status) in p]
            for p in console[:1]:
                problems.remove(p)
        assert problems == []


@pytest.fixture
def live(transactional_db: None, tmp_path: Path) -> Iterator[Platform]:
    """The platform, with the retry tests' function registered in its worker too."""
    modules = {"RUNYARD_FUNCTION_MODULES": "tests.e2e.control_functions"}
    with platform(tmp_path, "web", "worker", "scheduler", **modules) as p:
        yield p


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    with chromium_context(monkeypatch, width=1280, height=1000) as context:
        yield context


def open_page(context: Any, base: str, user: Any) -> tuple[Any, Watch]:
    page = context.new_page()
    page.set_default_timeout(30_000)
    watch = Watch(page, base)
    page.on("dialog", lambda dialog: dialog.accept())  # "Cancel this run?"
    page.goto(f"{base}/login/")
    page.fill("#id_username", user.username)
    page.fill("#id_password", PASSWORD)
    page.click("#login-form button[type=submit]")
    page.wait_for_url(re.compile(r"/runs/$|/$"))
    return page, watch


def show(page: Any, watch: Watch, run: Run, status: str | None = None) -> None:
    watch.leaving = True
    page.goto(f"{watch.base}/runs/{run.public_id}/")
    page.wait_for_selector(LIVE)
    watch.leaving = False  # the old page's aborts were reported before the new one went live
    if status:
        page.wait_for_selector(f'#run-status[data-status="{status}"]')


def ended(run: Run, status: str, live: Platform) -> Run:
    run.refresh_from_db()
    assert run.status == status, (run.status, run.error, live.log("worker")[-3000:])
    return run


def setup(name: str) -> tuple[Any, Any]:
    tenant = make_tenant(f"{name}-co")
    user = make_user(f"{name}@example.com", tenant=tenant, password=PASSWORD)
    return tenant, user


def test_cancel_in_each_mode_and_pause_then_resume(live: Platform, browser: Any) -> None:
    tenant, user = setup("cancel")
    create_graph_version(tenant, slow_spec())
    create_graph_version(tenant, approval_spec())
    base = live.url
    page, watch = open_page(browser, base, user)

    # Interrupt: the run is mid-node (a 30 s scripted call); cancel aborts it and keeps state.
    run = create_run(tenant, graph="slow")
    show(page, watch, run, "running")
    page.select_option("#cancel-action", "interrupt")
    page.click("#cancel-button")
    page.wait_for_selector("#toasts .msg-success")
    page.wait_for_selector('#run-status[data-status="cancelled"]')
    page.locator("#panel-controls").get_by_text("The run has ended").wait_for()
    run = ended(run, RunStatus.CANCELLED, live)
    assert run.cancel_action == "interrupt" and (run.error or {}).get("code") == "cancelled"

    # Rollback: the thread's state goes back to what it was before the run.
    thread = create_thread(tenant, state={"topic": "printers"})
    run = create_run(tenant, graph="slow", thread_id=str(thread.public_id))
    show(page, watch, run, "running")
    page.select_option("#cancel-action", "rollback")
    page.click("#cancel-button")
    page.wait_for_selector('#run-status[data-status="cancelled"]')
    run = ended(run, RunStatus.CANCELLED, live)
    assert run.cancel_action == "rollback"
    assert Thread.objects.get(pk=thread.pk).state == {"topic": "printers"}
    assert "run.cancelled" in page.inner_text("#event-log")

    # Pause a waiting run, then resume it: back to waiting at its gate.
    run = create_run(tenant, graph="approve")
    show(page, watch, run, "waiting")
    page.click("#pause-button")
    page.wait_for_selector('#run-status[data-status="paused"]')
    page.wait_for_selector("#resume-button")
    assert ended(run, RunStatus.PAUSED, live)
    page.screenshot(path=str(SHOTS / "runyard_controls_paused.png"), full_page=True)
    page.click("#resume-button")
    page.wait_for_selector('#run-status[data-status="waiting"]')
    page.wait_for_selector("#approve-button")
    ended(run, RunStatus.WAITING, live)
    watch.check()


def test_approve_with_a_patch_reject_input_and_guidance(live: Platform, browser: Any) -> None:
    tenant, user = setup("decide")
    create_graph_version(tenant, approval_spec())
    create_graph_version(tenant, INPUT_SPEC)
    base = live.url
    page, watch = open_page(browser, base, user)

    # Guidance first (the run is waiting), then approve with a state patch.
    run = create_run(tenant, graph="approve")
    show(page, watch, run, "waiting")
    page.click("#approval-control summary")  # opened before the guidance renders the panel anew
    page.evaluate("document.getElementById('approval-patch-section').dataset.old = '1'")
    page.fill("#guidance-message", "Keep it short.")
    page.click("form:has(#guidance-message) button[type=submit]")
    page.wait_for_selector("#toasts .msg-success")
    run.refresh_from_db()
    assert run.guidance_pending is True
    assert page.input_value("#guidance-message") == ""  # a sent form is cleared
    page.wait_for_function("!document.getElementById('approval-patch-section').dataset.old")
    assert page.is_visible("#approval-patch")  # the section the person opened stays open
    page.fill("#approval-patch", '{"priority": "high"}')
    page.screenshot(path=str(SHOTS / "runyard_controls_approval.png"), full_page=True)
    page.click("#approve-button")
    page.wait_for_selector('#run-status[data-status="succeeded"]')
    run = ended(run, RunStatus.SUCCEEDED, live)
    assert run.state["priority"] == "high" and run.state["log"] == ["before", "after"]
    assert run.state["guidance"] == ["Keep it short."]

    # Reject follows on_reject.
    run = create_run(tenant, graph="approve")
    show(page, watch, run, "waiting")
    page.click("#reject-button")
    page.wait_for_selector('#run-status[data-status="succeeded"]')
    run = ended(run, RunStatus.SUCCEEDED, live)
    assert run.state["log"] == ["before", "rejected"]

    # Input.
    run = create_run(tenant, graph="ask")
    show(page, watch, run, "waiting")
    page.fill("#input-value", "Ada")
    page.click("#input-control button[type=submit]")
    page.wait_for_selector('#run-status[data-status="succeeded"]')
    run = ended(run, RunStatus.SUCCEEDED, live)
    assert run.state["name"] == "Ada"
    watch.check()


def test_a_refused_control_keeps_the_typed_patch(live: Platform, browser: Any) -> None:
    tenant, user = setup("refused")
    create_graph_version(tenant, approval_spec())
    base = live.url
    page, watch = open_page(browser, base, user)
    run = create_run(tenant, graph="approve")
    show(page, watch, run, "waiting")
    patch = '{"note": "typed before the refusal"}'
    page.click("#approval-control summary")
    page.fill("#approval-patch", patch)

    # Someone else decides meanwhile: the run moves on under the typed form.
    decide_approval(run, "gate@1", decision="reject", by="api")
    page.wait_for_selector("#controls-held")
    assert page.input_value("#approval-patch") == patch
    watch.allow(409, r"/approval/$")
    watch_of(browser).allow(r"409 .*/approval/$", r"status of 409")
    page.click("#approve-button")
    toast = page.wait_for_selector("#toasts .msg-error")
    assert "already" in toast.inner_text()
    assert page.input_value("#approval-patch") == patch
    page.screenshot(path=str(SHOTS / "runyard_controls_refused.png"), full_page=True)
    run = ended(run, RunStatus.SUCCEEDED, live)
    assert "note" not in run.state and run.state["log"] == ["before", "rejected"]
    # Asked for, the current controls replace the kept form.
    page.click("#controls-refresh")
    page.locator("#panel-controls").get_by_text("The run has ended").wait_for()
    watch.check()


def test_retry_resume_and_fork_of_ended_runs(live: Platform, browser: Any, tmp_path: Path) -> None:
    tenant, user = setup("ended")
    gate = tmp_path / "gate"
    gate.write_text("closed")
    create_graph_version(tenant, gated_spec(str(gate)))
    create_graph_version(tenant, approval_spec())
    base = live.url
    page, watch = open_page(browser, base, user)

    # Retry a failed run at its failed node.
    run = create_run(tenant, graph="gated", input={"ticket": "T-1"})
    show(page, watch, run, "failed")
    page.wait_for_selector("#retry-button")
    assert "gated" in page.inner_text("#retry-button")
    for width in (1280, 390):
        page.set_viewport_size({"width": width, "height": 1000})
        page.screenshot(path=str(SHOTS / f"runyard_controls_failed_{width}.png"), full_page=True)
        # The Fork button stays in reach at any width (its column sticks to the right).
        box = page.locator('#panel-timeline tr[data-step="2"] .step-fork').bounding_box()
        assert box is not None and box["x"] + box["width"] <= width
    page.set_viewport_size({"width": 1280, "height": 1000})
    gate.unlink()
    page.click("#retry-button")
    page.wait_for_selector('#run-status[data-status="succeeded"]')
    run = ended(run, RunStatus.SUCCEEDED, live)
    assert run.state["log"] == ["before", "gated"]
    page.wait_for_selector('#panel-timeline tr[data-step="4"]')  # panels follow the badge
    assert page.locator("#panel-timeline tr[data-step]").count() == 4

    # Fork from step 1: a new run from that checkpoint, no input asked, and the page goes there.
    here = page.url
    watch.leaving = True
    page.click('#panel-timeline tr[data-step="1"] .step-fork')
    page.wait_for_url(lambda url: url != here)
    page.wait_for_selector(LIVE)
    watch.leaving = False
    fork = Run.objects.exclude(pk=run.pk).get(tenant=tenant)
    assert page.url == f"{base}/runs/{fork.public_id}/"
    page.wait_for_selector('#run-status[data-status="succeeded"]')
    fork = ended(fork, RunStatus.SUCCEEDED, live)
    assert fork.input == {} and fork.metadata["forked_from_step"] == 1
    assert fork.state["ticket"] == "T-1" and fork.state["log"] == ["before", "gated"]
    page.set_viewport_size({"width": 390, "height": 900})
    page.screenshot(path=str(SHOTS / "runyard_controls_fork_390.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 1000})

    # Resume an interrupted run: it goes on from its last checkpoint, to its gate.
    run = create_run(tenant, graph="approve")
    show(page, watch, run, "waiting")
    mark_interrupted(run, by="operator", reason="worker lost")
    page.wait_for_selector('#run-status[data-status="interrupted"]')
    page.wait_for_selector("#resume-button")
    page.click("#resume-button")
    page.wait_for_selector('#run-status[data-status="waiting"]')
    page.wait_for_selector("#approve-button")
    ended(run, RunStatus.WAITING, live)
    assert json.dumps(run.state) and run.state["log"] == ["before"]
    watch.check()
