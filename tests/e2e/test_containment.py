"""Issue #15's hostile tenant, replayed against real daphne + qcluster + scheduler processes.

Every attack is refused up front or fails its own run within seconds; the worker processes stay
small; and afterwards a plain run of every tenant still succeeds.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tenants.models import Role, Tenant
from tenants.services import create_api_key
from tests.e2e.processes import Platform, platform
from tests.factories import make_tenant
from tests.runs.conftest import chain_spec

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ENDED = {"succeeded", "failed", "cancelled", "interrupted", "timed_out"}
# A worker process that evaluated a bounded expression stays within this resident size.
WORKER_RSS_LIMIT_MB = 400


class Api:
    def __init__(self, base: str, key: str) -> None:
        self.client = httpx.Client(
            base_url=base + "/api/v1", headers={"Authorization": f"Bearer {key}"}, timeout=30
        )

    def post(self, path: str, body: Any = None, **kw: Any) -> httpx.Response:
        if isinstance(body, (bytes, str)):
            return self.client.post(
                path, content=body, headers={"Content-Type": "application/json"}, **kw
            )
        return self.client.post(path, json=body, **kw)

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.client.get(path, **kw)

    def graph(self, spec: dict[str, Any]) -> httpx.Response:
        return self.post("/graphs", spec)

    def start(self, graph: str, input: dict | None = None, **extra: Any) -> dict[str, Any]:
        r = self.post("/runs", {"graph": graph, "input": input or {}, **extra})
        assert r.status_code == 201, r.text
        return r.json()

    def wait_ended(self, run_id: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.get(f"/runs/{run_id}").json()
            if run["status"] in ENDED:
                return run
            time.sleep(0.2)
        raise AssertionError(f"run {run_id} did not end within {timeout}s: {run}")


def _tenant_api(p: Platform, slug: str, **limits: Any) -> tuple[Tenant, Api]:
    tenant = make_tenant(slug, **limits)
    _, raw = create_api_key(tenant, role=Role.ADMIN)
    return tenant, Api(p.url, raw)


def _group_rss_peaks_mb(pid: int) -> list[float]:
    """VmHWM (peak resident size) of every live process in the process group of `pid`."""
    peaks = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            pgid = int(stat.rsplit(")", 1)[1].split()[2])
            if pgid != os.getpgid(pid):
                continue
            for line in Path(f"/proc/{entry}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks.append(int(line.split()[1]) / 1024)
        except (OSError, ValueError, IndexError):
            continue
    return peaks


def _transform(name: str, expression: str) -> dict[str, Any]:
    return {
        "name": name,
        "start": "boom",
        "nodes": {"boom": {"kind": "transform", "set": {"x": expression}}, "done": {"kind": "end"}},
        "edges": [{"from": "boom", "to": "done"}],
    }


def _refused_or_failed(api: Api, spec: dict[str, Any], codes: set[str]) -> str:
    """Store and run `spec`: either validation refuses it (422) or its run fails with one of
    `codes` within seconds. Returns which happened."""
    r = api.graph(spec)
    if r.status_code == 422:
        return "refused"
    assert r.status_code == 201, r.text
    started = time.monotonic()
    run = api.start(spec["name"])
    run = api.wait_ended(run["id"], timeout=20)
    assert run["status"] == "failed", run
    assert run["error"]["code"] in codes, run["error"]
    assert time.monotonic() - started < 20
    return "failed"


def test_hostile_specs_are_contained_and_every_tenant_still_runs(tmp_path: Path) -> None:
    with platform(tmp_path, "web", "worker", "scheduler") as p:
        mallory, evil = _tenant_api(p, "mallory", max_concurrent_runs=1, max_queued_runs=1)
        alice, good = _tenant_api(p, "alice")
        assert good.graph(chain_spec("plain", n=3)).status_code == 201
        assert evil.graph(chain_spec("plain", n=3)).status_code == 201

        # A run tree: a parallel of six subgraphs of itself, as deep as the ceiling allows
        # (6 + 36 children by the second level, so max_child_runs trips before any depth).
        bomb = {
            "name": "bomb",
            "max_depth": 8,
            "start": "fan",
            "nodes": {
                "fan": {"kind": "parallel", "branches": list("abcdef")},
                **{b: {"kind": "subgraph", "graph": "bomb", "output": b} for b in "abcdef"},
                "done": {"kind": "end"},
            },
            "edges": [{"from": "fan", "to": "done"}],
        }
        assert evil.graph({**bomb, "max_depth": 9}).status_code == 422
        _refused_or_failed(evil, bomb, {"limit_exceeded.max_child_runs"})
        from runs.models import Run

        assert Run.objects.filter(tenant=mallory).count() <= 1 + 1 + 25

        # Expressions that allocate or compute without bound.
        for i, expression in enumerate(
            [
                "('a' * 1000000).ljust(1500000000)",
                "[[[1] * 1000] * 1000] * 100",
                "((2 ** 1000) ** 1000) ** 1000",
                "('x' * 1000000) | wordwrap(1)",
            ]
        ):
            _refused_or_failed(evil, _transform(f"expr{i}", expression), {"expression_limit"})

        # State that doubles every step stops at the value cap; state that grows by appends
        # stops at max_state_bytes.
        doubling = {
            "name": "doubling",
            "state": {"s": {"default": "ab"}},
            "start": "grow",
            "nodes": {"grow": {"kind": "transform", "set": {"s": "state.s ~ state.s"}}},
            "edges": [{"from": "grow", "to": "grow"}],
        }
        _refused_or_failed(evil, doubling, {"expression_limit", "limit_exceeded.max_state_bytes"})
        hoard = {
            "name": "hoard",
            "state": {"log": {"reducer": "append", "default": []}},
            "start": "grow",
            "nodes": {"grow": {"kind": "transform", "set": {"log": "'y' * 500000"}}},
            "edges": [{"from": "grow", "to": "grow"}],
        }
        _refused_or_failed(evil, hoard, {"limit_exceeded.max_state_bytes"})

        # Prices belong to the operator.
        priced = {
            "name": "free-llm",
            "start": "ask",
            "nodes": {
                "ask": {
                    "kind": "llm",
                    "provider": "openai",
                    "model": "gpt-4o-mini",
                    "prompt": "hi",
                    "output": "answer",
                    "price": {"input": 0, "output": 0},
                },
                "done": {"kind": "end"},
            },
            "edges": [{"from": "ask", "to": "done"}],
        }
        assert evil.graph(priced).status_code == 422

        # Numbers the database cannot store.
        for body in (
            '{"graph": "plain", "input": {"x": NaN}}',
            '{"graph": "plain", "input": {"x": "a\\u0000b"}}',
        ):
            r = evil.post("/runs", body)
            assert r.status_code == 400, r.text
            assert r.json()["error"]["code"]

        # A fork from a final checkpoint never sits running with nothing to do.
        thread = evil.post("/threads", {}).json()
        first = evil.start("plain", thread_id=thread["id"])
        assert evil.wait_ended(first["id"], timeout=20)["status"] == "succeeded"
        checkpoints = evil.get(f"/threads/{thread['id']}/checkpoints", params={"limit": 100})
        last = checkpoints.json()["items"][-1]["id"]
        r = evil.post(
            "/runs", {"graph": "plain", "thread_id": thread["id"], "from_checkpoint": last}
        )
        if r.status_code != 409:
            assert r.status_code == 201, r.text
            assert evil.wait_ended(r.json()["id"], timeout=10)["status"] == "succeeded"

        # A 1 MB spec of expressions is validated quickly, and meanwhile another tenant's
        # requests are answered.
        nodes = {
            f"n{i}": {
                "kind": "transform",
                "set": {f"k{j}": f"state.k{j} + {i} * 2" for j in range(8)},
            }
            for i in range(1800)
        }
        nodes["done"] = {"kind": "end"}
        order = [*nodes]
        big = {
            "name": "big",
            "start": "n0",
            "nodes": nodes,
            "edges": [{"from": a, "to": b} for a, b in zip(order, order[1:], strict=False)],
        }
        body = json.dumps(big)
        assert len(body) < 1024 * 1024
        latencies: list[float] = []
        stop = threading.Event()

        def probe() -> None:
            while not stop.is_set():
                t = time.monotonic()
                assert good.get("/runs", params={"limit": 5}).status_code == 200
                latencies.append(time.monotonic() - t)
                time.sleep(0.05)

        prober = threading.Thread(target=probe)
        prober.start()
        t = time.monotonic()
        r = evil.post("/graphs/validate", body)
        validate_seconds = time.monotonic() - t
        stop.set()
        prober.join()
        assert r.status_code == 200, r.text[:500]
        assert validate_seconds < 3, validate_seconds
        assert latencies and max(latencies) < 2, latencies

        # The workers stayed small, and every tenant still runs.
        peaks = _group_rss_peaks_mb(p.procs["worker"].pid)
        assert peaks and max(peaks) < WORKER_RSS_LIMIT_MB, peaks
        for api in (good, evil):
            run = api.start("plain")
            assert api.wait_ended(run["id"], timeout=30)["status"] == "succeeded"
