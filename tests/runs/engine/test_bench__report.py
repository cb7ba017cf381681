"""bench/engine.py produces its JSON report (tiny budgets here: this checks shape, not speed)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench" / "engine.py"


def load(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_engine", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # LangGraph resolves the state TypedDict's annotations through sys.modules.
    monkeypatch.setitem(sys.modules, "bench_engine", module)
    spec.loader.exec_module(module)
    return module


def test_report_without_langgraph_marks_it_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    bench = load(monkeypatch)
    monkeypatch.setattr(bench, "langgraph_version", lambda: None)
    data = bench.report(budget=0.005)
    assert data["langgraph"] == {"status": "skipped", "reason": "langgraph is not installed"}
    assert set(data["cases"]) == {"chain_10", "chain_100", "fanout_10"}
    for case in data["cases"].values():
        assert case["engine_us_per_node"] > 0 and case["bare_us_per_node"] > 0
        assert "ratio_vs_langgraph" not in case
    json.dumps(data)


def test_report_compares_with_langgraph_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("langgraph")
    bench = load(monkeypatch)
    monkeypatch.setattr(bench, "CASES", [c for c in bench.CASES if c[0] != "chain_100"])
    data = bench.report(budget=0.005)
    assert data["langgraph"]["status"] == "ok"
    for case in data["cases"].values():
        assert case["langgraph_us_per_node"] > 0
        assert isinstance(case["ratio_vs_langgraph"], float)
        assert isinstance(case["meets_target"], bool)
