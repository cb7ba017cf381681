"""approval, input and long sleep come back to the runtime as suspensions."""

from __future__ import annotations

from runs.engine import Executor, Resolution, RunContext, Suspension, initial_state, parse_spec

from .helpers import run_all

TRIAGE = {
    "name": "triage",
    "start": "draft",
    "state": {"notes": {"reducer": "append", "default": []}},
    "nodes": {
        "draft": {"kind": "transform", "set": {"reply": "'Draft for ' ~ state.customer"}},
        "approve": {
            "kind": "approval",
            "message": "Send reply to {{ state.customer }}?",
            "timeout": 3600,
            "default": "reject",
            "on_reject": "rework",
            "output": "decision",
        },
        "send": {"kind": "transform", "set": {"sent": "true"}},
        "escalate": {"kind": "transform", "set": {"escalated": "true"}},
        "rework": {"kind": "transform", "set": {"reworked": "true"}},
        "done": {"kind": "end"},
    },
    "edges": [
        {"from": "draft", "to": "approve"},
        {"from": "approve", "to": "escalate", "when": "state.vip"},
        {"from": "approve", "to": "send"},
        {"from": "send", "to": "done"},
        {"from": "escalate", "to": "done"},
        {"from": "rework", "to": "done"},
    ],
}


def decide(resolution: Resolution | None, seen: list[Suspension] | None = None) -> RunContext:
    def resolve(suspension: Suspension) -> Resolution | None:
        if seen is not None:
            seen.append(suspension)
        return resolution

    return RunContext(resolve=resolve)


def test_approval_without_a_decision_suspends_with_deadline_and_default() -> None:
    seen: list[Suspension] = []
    results = run_all(TRIAGE, {"customer": "Ann"}, decide(None, seen))
    last = results[-1]
    assert last.status == "suspended" and last.node == "approve"
    assert last.suspension == seen[0]
    s = last.suspension
    assert (s.kind, s.id, s.node, s.timeout, s.default) == (
        "approval",
        "approve@1",
        "approve",
        3600.0,
        "reject",
    )
    assert s.message == "Send reply to Ann?"
    assert s.data == {"routes": ["escalate", "send"], "on_reject": "rework"}
    # The position is unchanged: resuming it runs the approval again.
    assert last.position == results[0].position == {"node": "approve", "step": 1, "visits": {}}
    assert last.index == 2 and last.state == results[0].state and last.update == {}


def test_resuming_with_a_decision_approves_and_follows_the_edges() -> None:
    spec = parse_spec(TRIAGE)
    first = list(Executor(spec, decide(None)).run(initial_state(spec, {"customer": "Ann"})))
    suspended = first[-1]
    ctx = decide(Resolution(decision="approve", by="user:ann", patch={"notes": "looks good"}))
    rest = list(Executor(spec, ctx).run(suspended.state, suspended.position))
    assert [r.node for r in rest] == ["approve", "send", "done"]
    assert rest[0].index == 2 and rest[0].status == "completed"
    assert (
        "approval.resolved",
        {"id": "approve@1", "decision": "approve", "by": "user:ann", "route": None},
    ) in rest[0].events
    final = rest[-1].state
    assert final["notes"] == ["looks good"]
    assert final["decision"] == {"id": "approve@1", "decision": "approve", "by": "user:ann"}
    assert final["sent"] is True


def test_a_decision_that_arrived_early_is_used_without_suspending() -> None:
    results = run_all(TRIAGE, {"customer": "Ann"}, decide(Resolution(decision="approve")))
    assert [r.status for r in results] == ["completed"] * 4
    assert results[-1].done


def test_reject_goes_to_on_reject() -> None:
    results = run_all(
        TRIAGE, {"customer": "Ann"}, decide(Resolution(decision="reject", by="deadline"))
    )
    assert [r.node for r in results] == ["draft", "approve", "rework", "done"]


def test_reject_without_on_reject_fails_the_run_with_approval_rejected() -> None:
    spec = {**TRIAGE, "nodes": {**TRIAGE["nodes"], "approve": {"kind": "approval"}}}
    spec["nodes"].pop("rework")
    spec["edges"] = [e for e in TRIAGE["edges"] if e["from"] != "rework"]
    spec["edges"].append({"from": "approve", "to": "done", "on_error": True})
    last = run_all(spec, {"customer": "Ann"}, decide(Resolution(decision="reject", by="user:bo")))[
        -1
    ]
    assert last.status == "failed"
    assert last.run_error["code"] == "approval_rejected"
    assert last.run_error["node"] == "approve"
    assert "approve@1" in last.run_error["message"] and "user:bo" in last.run_error["message"]


def test_reroute_to_one_of_the_edges() -> None:
    results = run_all(
        TRIAGE, {"customer": "Ann"}, decide(Resolution(decision="approve", route="escalate"))
    )
    assert [r.node for r in results] == ["draft", "approve", "escalate", "done"]


def test_reroute_to_a_node_that_is_not_an_edge_target_fails() -> None:
    last = run_all(
        TRIAGE, {"customer": "Ann"}, decide(Resolution(decision="approve", route="rework"))
    )[-1]
    assert last.error["code"] == "invalid_route" and last.run_error["fatal"]


def test_approval_ids_count_occurrences() -> None:
    spec = {
        "name": "loop",
        "start": "ask",
        "state": {"n": {"reducer": "add", "default": 0}},
        "nodes": {
            "ask": {"kind": "approval"},
            "count": {"kind": "transform", "set": {"n": "1"}},
            "done": {"kind": "end"},
        },
        "edges": [
            {"from": "ask", "to": "count"},
            {"from": "count", "to": "done", "when": "state.n >= 3"},
            {"from": "count", "to": "ask"},
        ],
    }
    seen: list[Suspension] = []
    run_all(spec, ctx=decide(Resolution(decision="approve"), seen))
    assert [s.id for s in seen] == ["ask@1", "ask@2", "ask@3"]


INPUT = {
    "name": "ask",
    "start": "ask",
    "nodes": {
        "ask": {
            "kind": "input",
            "prompt": "Your name, {{ state.title }}?",
            "output": "name",
            "timeout": 600,
            "schema": {"type": "string", "minLength": 2},
        },
        "greet": {"kind": "transform", "set": {"greeting": "'Hi ' ~ state.name"}},
        "done": {"kind": "end"},
    },
    "edges": [{"from": "ask", "to": "greet"}, {"from": "greet", "to": "done"}],
}


def test_input_suspends_then_writes_the_value() -> None:
    seen: list[Suspension] = []
    first = run_all(INPUT, {"title": "Dr"}, decide(None, seen))
    s = first[-1].suspension
    assert (s.kind, s.id, s.timeout, s.message) == ("input", "ask@1", 600.0, "Your name, Dr?")
    assert s.data == {"output": "name", "schema": {"type": "string", "minLength": 2}}
    rest = run_all(
        INPUT,
        ctx=decide(Resolution(value="Ada", by="user:ada")),
        state=first[-1].state,
        position=first[-1].position,
    )
    assert rest[-1].state["greeting"] == "Hi Ada"
    assert ("input.received", {"id": "ask@1", "by": "user:ada"}) in rest[0].events


def test_input_not_matching_its_schema_fails() -> None:
    last = run_all(INPUT, {"title": "Dr"}, decide(Resolution(value="A")))[-1]
    assert last.error["code"] == "input_invalid"


def test_short_sleep_waits_in_process_and_long_sleep_suspends() -> None:
    spec = {
        "name": "s",
        "start": "nap",
        "nodes": {"nap": {"kind": "sleep", "seconds": 0.05}, "done": {"kind": "end"}},
        "edges": [{"from": "nap", "to": "done"}],
    }
    assert run_all(spec)[-1].done
    spec["nodes"]["nap"]["seconds"] = 86400
    seen: list[Suspension] = []
    last = run_all(spec, ctx=decide(None, seen))[-1]
    assert last.status == "suspended"
    assert (last.suspension.kind, last.suspension.timeout, last.suspension.id) == (
        "sleep",
        86400.0,
        "nap@1",
    )
    woken = run_all(
        spec,
        ctx=decide(Resolution(decision="wake", by="timer")),
        state=last.state,
        position=last.position,
    )
    assert woken[-1].done
