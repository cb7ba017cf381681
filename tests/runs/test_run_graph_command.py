"""`manage.py run_graph`: runs in-process with no queue and no database (nothing is django_db)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "graphs"
TICKET = {"text": "Checkout is down for everyone!", "customer": "Acme", "plan": "pro"}


def run(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("run_graph", *args, stdout=out, stderr=err)
        code = 0
    except CommandError as exc:
        code = exc.returncode
        err.write(str(exc))
    return code, out.getvalue(), err.getvalue()


def write(tmp_path: Path, spec: dict, name: str = "graph.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(spec))
    return str(path)


SIMPLE = {
    "name": "simple",
    "start": "greet",
    "nodes": {
        "greet": {"kind": "transform", "set": {"greeting": "'Hello ' ~ state.who"}},
        "done": {"kind": "end"},
    },
    "edges": [{"from": "greet", "to": "done"}],
}


def test_success_prints_progress_on_stderr_and_only_json_on_stdout(tmp_path: Path) -> None:
    code, out, err = run(write(tmp_path, SIMPLE), "--input", '{"who": "Ada"}', "--json")
    assert code == 0
    assert json.loads(out) == {"who": "Ada", "greeting": "Hello Ada"}
    lines = [line for line in err.splitlines() if line.strip()]
    assert any("greet" in line and "completed" in line for line in lines)
    assert any("done" in line and "completed" in line for line in lines)


def test_without_json_stdout_has_a_summary_and_the_state(tmp_path: Path) -> None:
    code, out, _ = run(write(tmp_path, SIMPLE), "--input", '{"who": "Ada"}')
    assert code == 0
    assert out.startswith("Run succeeded: 2 steps")
    assert json.loads(out.split("Final state:\n", 1)[1]) == {"who": "Ada", "greeting": "Hello Ada"}


def test_yaml_spec_and_input_from_a_file(tmp_path: Path) -> None:
    spec = tmp_path / "g.yaml"
    spec.write_text(
        "name: y\nstart: a\nnodes:\n  a: {kind: transform, set: {n: 'state.n + 1'}}\n"
        "  done: {kind: end}\nedges:\n  - {from: a, to: done}\n"
    )
    data = tmp_path / "in.json"
    data.write_text('{"n": 41}')
    code, out, _ = run(str(spec), "--input", f"@{data}", "--json")
    assert code == 0 and json.loads(out)["n"] == 42


def test_invalid_spec_exits_2_listing_every_problem(tmp_path: Path) -> None:
    bad = {
        "name": "bad",
        "start": "nowhere",
        "nodes": {"a": {"kind": "teleport"}, "done": {"kind": "end"}},
        "edges": [{"from": "a", "to": "ghost"}],
    }
    code, out, err = run(write(tmp_path, bad))
    assert code == 2
    assert out == ""
    assert "start" in err and "unknown node 'nowhere'" in err
    assert "nodes.a" in err and "unknown kind 'teleport'" in err
    assert "edges[0]" in err and "unknown node 'ghost'" in err


def test_missing_file_and_bad_input_exit_2(tmp_path: Path) -> None:
    assert run(str(tmp_path / "missing.json"))[0] == 2
    assert run(write(tmp_path, SIMPLE), "--input", "{not json")[0] == 2
    assert run(write(tmp_path, SIMPLE), "--input", "[1]")[0] == 2


def test_input_not_matching_the_schema_exits_2() -> None:
    code, _, err = run(str(EXAMPLES / "support-triage.json"), "--input", '{"plan": "gold"}')
    assert code == 2
    assert "input.text" in err and "input.plan" in err


def test_failed_run_exits_1_naming_the_code_and_node(tmp_path: Path) -> None:
    spec = {
        **SIMPLE,
        "nodes": {**SIMPLE["nodes"], "greet": {"kind": "transform", "set": {"x": "state.a.b.c"}}},
    }
    code, out, err = run(write(tmp_path, spec), "--json")
    assert code == 1
    assert json.loads(out) == {}
    assert "expression_error" in err and "'greet'" in err


def test_approval_without_auto_approve_fails_with_a_clear_message() -> None:
    code, _, err = run(str(EXAMPLES / "support-triage.json"), "--input", json.dumps(TICKET))
    assert code == 1
    assert "approve_escalation@1" in err and "--auto-approve" in err


def test_auto_approve_approves_and_answers_inputs_with_their_default(tmp_path: Path) -> None:
    spec = {
        "name": "ask",
        "start": "ask",
        "nodes": {
            "ask": {
                "kind": "input",
                "prompt": "Name?",
                "output": "name",
                "schema": {"type": "string", "default": "anonymous"},
            },
            "nothing": {"kind": "input", "output": "maybe"},
            "ok": {"kind": "approval", "output": "decision"},
            "done": {"kind": "end"},
        },
        "edges": [
            {"from": "ask", "to": "nothing"},
            {"from": "nothing", "to": "ok"},
            {"from": "ok", "to": "done"},
        ],
    }
    code, out, _ = run(write(tmp_path, spec), "--auto-approve", "--json")
    state = json.loads(out)
    assert code == 0
    assert state["name"] == "anonymous" and state["maybe"] is None
    assert state["decision"]["decision"] == "approve"
    assert state["decision"]["by"] == "cli:auto-approve"


def test_subgraphs_are_loaded_from_files_next_to_the_spec(tmp_path: Path) -> None:
    write(tmp_path, {**SIMPLE, "name": "child"}, "child.json")
    parent = {
        "name": "parent",
        "start": "sub",
        "nodes": {
            "sub": {
                "kind": "subgraph",
                "graph": "child",
                "input": {"who": "state.who"},
                "output": "child",
            },
            "missing": {"kind": "subgraph", "graph": "nope"},
            "done": {"kind": "end"},
        },
        "edges": [
            {"from": "sub", "to": "done", "when": "state.child.greeting"},
            {"from": "sub", "to": "missing"},
            {"from": "missing", "to": "done"},
        ],
    }
    code, out, err = run(write(tmp_path, parent), "--input", '{"who": "Bo"}', "--json")
    assert code == 0, err
    assert json.loads(out)["child"] == {"who": "Bo", "greeting": "Hello Bo"}


@pytest.mark.parametrize(
    ("example", "data"),
    [
        ("support-triage.json", TICKET),
        ("research-fanout.json", {"question": "How do durable runtimes recover?"}),
        ("document-pipeline.json", {"title": "Notes", "document": "Steps commit checkpoints."}),
    ],
)
def test_manage_py_runs_each_example_in_a_subprocess(example: str, data: dict) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "run_graph",
            str(EXAMPLES / example),
            "--input",
            json.dumps(data),
            "--auto-approve",
            "--json",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    state = json.loads(proc.stdout)
    assert isinstance(state, dict) and state
    assert "succeeded" in proc.stderr


def test_manage_py_exit_codes_in_a_subprocess(tmp_path: Path) -> None:
    def code(*args: str) -> int:
        return subprocess.run(
            [sys.executable, "manage.py", "run_graph", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        ).returncode

    assert code(str(EXAMPLES / "support-triage.json"), "--input", json.dumps(TICKET)) == 1
    assert code(write(tmp_path, {"name": "broken"})) == 2
