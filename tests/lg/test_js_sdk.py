"""The JS SDK (`@langchain/langgraph-sdk`, pinned in tests/lg/js/package.json) makes the calls
its `useStream` hook makes against the real processes: thread, streamed run with tokens,
state and history, an interrupt resumed by a command, a rejoin from "-1"."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tenants.models import Tenant
from tests.e2e.processes import Platform
from tests.lg.conftest import key_for, lg_url

pytestmark = pytest.mark.e2e

JS = Path(__file__).parent / "js"


@pytest.fixture(scope="session")
def js_sdk() -> Path:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are needed for the JS SDK test (apt-get install nodejs npm)")
    if not (JS / "node_modules" / "@langchain" / "langgraph-sdk").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=JS, check=True, timeout=300)
    return JS


def test_use_stream_calls(
    tenant: Tenant, graphs: dict[str, Any], lg_platform: Platform, js_sdk: Path
) -> None:
    done = subprocess.run(
        ["node", "use_stream_calls.mjs", lg_url(lg_platform), key_for(tenant)],
        cwd=js_sdk,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr + lg_platform.log("web")
    report = json.loads(done.stdout.strip().splitlines()[-1])

    assert report["thread"]["status"] == "idle"
    assert report["events"][0] == "metadata" and report["events"][-1] == "end"
    assert all(report["ids"]), "every event carries an id"
    assert report["created"]["thread_id"] == report["thread"]["thread_id"]
    assert "the polished answer" in report["tokens"]
    assert report["lastValues"]["answer"] == "the polished answer"
    assert report["state"]["values"]["answer"] == "the polished answer"
    assert report["history"][0]["values"] == report["state"]["values"]

    assert report["interrupt"][0]["value"]["kind"] == "approval"
    assert report["reviewState"]["status"] == "interrupted"
    assert report["inputInterrupt"][0]["value"]["kind"] == "input"
    assert report["finalReview"]["reviewer"] == "js-reviewer"
    assert report["finalReview"]["shipped"] is True
    assert report["replayUpdates"] == [
        "propose",
        "__interrupt__",
        "approve",
        "__interrupt__",
        "who",
        "shipped",
        "done",
    ]
    assert report["missing"] == "404"
