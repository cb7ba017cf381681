"""The run page in a real browser shows a parallel node's branches running and an llm node's
tokens streaming into its output while the steps run (live frames, runs/live_frames.py),
against real daphne + qcluster + scheduler. Fails on any JavaScript error or failed
same-origin request. Screenshots at 1280 and 390 px go to $RUNYARD_SCREENSHOTS."""

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
    watch_of,
)
from tests.factories import make_tenant, make_user

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

require_browser()

TEXT = (
    "Here is the draft. It streams into the page a token at a time, so a person sees "
    "the answer being written while the step is still running."
)


def story_spec() -> dict[str, Any]:
    def branch(text: str, latency: int) -> dict[str, Any]:
        return {
            "kind": "llm",
            "provider": "scripted",
            "prompt": "look",
            "responses": [text],
            "latency_ms": latency,
            "output": "notes",
        }

    return {
        "name": "story",
        "state": {"notes": {"reducer": "append", "default": []}},
        "start": "plan",
        "nodes": {
            # A slow first step, so the page is open before the branches start.
            "plan": branch("plan", 1500),
            "research": {"kind": "parallel", "branches": ["web", "news"]},
            "web": branch("web notes", 4000),
            "news": branch("news notes", 200),
            "write": {
                "kind": "llm",
                "provider": "scripted",
                "prompt": "write",
                "responses": [TEXT],
                "token_ms": 90,
                "output": "draft",
            },
            "done": {"kind": "end"},
        },
        "edges": [
            {"from": "plan", "to": "research"},
            {"from": "research", "to": "write"},
            {"from": "write", "to": "done"},
        ],
    }


@pytest.fixture
def page(monkeypatch: pytest.MonkeyPatch, live_platform: Any) -> Iterator[Any]:
    with chromium_context(monkeypatch, width=1280, height=900) as context:
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.watch = watch_of(context)  # failed requests and JavaScript errors (PageWatch)
        yield page


RECORD = """() => {
  window.__seen = [];
  const box = document.getElementById("live-output");
  new MutationObserver(() => {
    const el = box.querySelector('.live-node[data-node="write"]');
    if (el) window.__seen.push([el.getAttribute("data-state"),
                                el.querySelector(".live-text").textContent.length]);
  }).observe(box, {subtree: true, childList: true, characterData: true, attributes: true});
}"""


def test_the_run_page_shows_running_branches_and_streaming_tokens(
    live_platform: Any, page: Any
) -> None:
    tenant = make_tenant("live-co")
    user = make_user("live@example.com", tenant=tenant, password=PASSWORD)
    create_graph_version(tenant, story_spec())
    base = live_platform.url
    page.goto(f"{base}/login/")
    page.fill("#id_username", user.username)
    page.fill("#id_password", PASSWORD)
    page.click("#login-form button[type=submit]")
    page.wait_for_url(re.compile(r"/runs/|/$"))

    run = create_run(tenant, graph="story")
    page.goto(f"{base}/runs/{run.public_id}/")
    page.evaluate(RECORD)
    page.wait_for_selector('#live-indicator[data-live="on"]')

    # The slow branch is running while the fast one is done: shown live, nothing stored yet.
    page.wait_for_selector('#run-diagram .dg-node[data-node="news"][data-state="completed"]')
    assert (
        page.locator('#run-diagram .dg-node[data-node="web"]').get_attribute("data-state")
        == "running"
    )
    assert "branch.completed" not in page.inner_text("#event-log")

    # Tokens stream into the write node's output, then the stored text replaces them.
    page.wait_for_selector('#live-output .live-node[data-node="write"][data-state="streaming"]')
    page.wait_for_function(
        "() => document.querySelector('#live-output .live-node[data-node=\"write\"] .live-text')"
        ".textContent.length > 40"
    )
    page.screenshot(path=str(SHOTS / "runyard_live_tokens_1280.png"), full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})
    page.locator("#live-output").screenshot(path=str(SHOTS / "runyard_live_tokens_390.png"))
    page.wait_for_selector('#live-output .live-node[data-node="write"][data-state="done"]')
    page.wait_for_selector('#run-status[data-status="succeeded"]')
    assert page.inner_text('#live-output .live-node[data-node="write"] .live-text') == TEXT

    seen = page.evaluate("window.__seen")
    streaming = sorted({n for state, n in seen if state == "streaming"})
    assert len(streaming) >= 8, seen  # the text grew piece by piece, not all at once
    assert streaming[0] < len(TEXT) // 2 and streaming[-1] <= len(TEXT)
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED and run.state["draft"] == TEXT
    assert Run.objects.filter(tenant=tenant).count() == 1
    page.watch.check()
