"""The dashboard's spec editor checks a spec as it is typed, in a real browser against daphne
as shipped: each problem is shown at the node or edge it concerns (its JSON path and line; a
click selects that line), and a fixed spec is shown valid, then stored. The check is the
API's `POST /api/v1/graphs/validate` under the dashboard session (with its CSRF token).

PageWatch (tests/e2e/browser.py) fails the test on any failed request or JavaScript error.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.urls import reverse

from runs.models import Graph
from tenants.models import Role
from tests.e2e.browser import (  # noqa: F401 - the fixture overrides the suite's
    PASSWORD,
    SHOTS,
    _fast_password_hashing,
    chromium_context,
    require_browser,
    watch_of,
)
from tests.e2e.processes import Platform, platform
from tests.factories import make_tenant, make_user

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

require_browser()  # skips the module without playwright or chromium


@pytest.fixture
def web(transactional_db: None, tmp_path: Path) -> Iterator[Platform]:
    """daphne alone: the editor needs no worker."""
    with platform(tmp_path, "web") as p:
        yield p


@pytest.fixture
def browser_context(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    with chromium_context(monkeypatch, width=1280, height=1000) as context:
        context.set_default_timeout(20_000)
        yield context


def spec_with_problems() -> dict[str, Any]:
    return {
        "name": "typed",
        "start": "ask",
        "nodes": {
            "ask": {"kind": "transform", "set": {"x": "1"}},
            "wait": {"kind": "sleep", "seconds": "soon"},
            "done": {"kind": "end"},
        },
        "edges": [
            {"from": "ask", "to": "wait"},
            {"from": "wait", "to": "nowhere"},
            {"from": "wait", "to": "done"},
        ],
    }


def type_spec(page: Any, spec: dict[str, Any]) -> str:
    text = json.dumps(spec, indent=2)
    page.fill("#upload-form textarea[name=spec]", text)
    return text


def test_the_spec_editor_shows_each_problem_at_its_node_or_edge(
    web: Platform, browser_context: Any
) -> None:
    base = web.url
    tenant = make_tenant("editor-co")
    admin = make_user("admin@example.com", tenant=tenant, role=Role.ADMIN, password=PASSWORD)
    page = browser_context.new_page()
    page.goto(f"{base}/login/")
    page.fill("#id_username", admin.username)
    page.fill("#id_password", PASSWORD)
    page.click("#login-form button[type=submit]")
    page.wait_for_load_state("networkidle")

    page.goto(f"{base}{reverse('runs:graphs')}")
    page.evaluate("document.getElementById('upload').open = true")
    text = type_spec(page, spec_with_problems())
    page.wait_for_selector('#spec-live[data-state="invalid"]')

    edge = page.locator('.spec-problem[data-kind="edge"][data-where="edges[1]"]')
    assert edge.locator(".spec-problem-path").inner_text() == "$.edges[1]"
    assert "`to` names unknown node 'nowhere'" in edge.inner_text()
    lines = text.splitlines()
    # Lines that are only "{": the spec's own, then one per edge.
    second_edge = [i for i, line in enumerate(lines, 1) if line.strip() == "{"][2]
    assert f"line {second_edge}" in edge.inner_text(), edge.inner_text()
    node = page.locator('.spec-problem[data-kind="node"][data-where="nodes.wait"]')
    assert node.locator(".spec-problem-path").inner_text() == "$.nodes.wait"
    assert "`seconds` must be a number" in node.inner_text()
    wait_line = next(i for i, line in enumerate(lines, 1) if '"wait": {' in line)
    assert f"line {wait_line}" in node.inner_text()
    page.screenshot(path=str(SHOTS / "runyard_spec_editor_problems.png"), full_page=True)

    # A click on the edge selects its line in the editor.
    edge.locator("button.spec-problem-at").click()
    selected = page.evaluate(
        "(() => { const t = document.querySelector('#upload-form textarea[name=spec]');"
        " return t.value.slice(t.selectionStart, t.selectionEnd); })()"
    )
    assert selected.strip() == "{"
    assert page.evaluate("document.activeElement.name") == "spec"

    # Fixed, the spec is valid; stored, it is the graph's first version.
    fixed = spec_with_problems()
    fixed["nodes"]["wait"]["seconds"] = 1
    fixed["edges"].pop(1)
    fixed["$schema"] = f"{base}/api/v1/schemas/graph-spec.json"
    type_spec(page, fixed)
    page.wait_for_selector('#spec-live[data-state="valid"]')
    assert page.locator(".spec-problem").count() == 0
    page.click("#upload-form button[type=submit]")
    page.wait_for_load_state("networkidle")
    assert Graph.objects.filter(tenant=tenant, name="typed", version=1).exists()

    # The schema the editor's `$schema` names is served, without credentials.
    schema = httpx.get(f"{base}/api/v1/schemas/graph-spec.json")
    assert schema.status_code == 200
    assert schema.headers["content-type"] == "application/schema+json"
    assert schema.json()["$defs"]["node"]["discriminator"]["propertyName"] == "kind"
    watch_of(browser_context).check()
