from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from runs.engine import NodeContext, RunContext, SpecError, parse_spec, register_function
from runs.engine.functions import registry

from .helpers import chain, run_all

CALLS: list[dict] = []


@pytest.fixture(autouse=True)
def functions() -> Iterator[None]:
    @register_function("test_fn_double", replace=True)
    def double(state: dict, ctx: NodeContext) -> dict:
        CALLS.append({"args": ctx.args, "metadata": ctx.metadata, "attempt": ctx.attempt})
        ctx.emit("custom.event", {"n": state["n"]})
        ctx.add_artifact("numbers.json", {"n": state["n"]})
        ctx.add_artifact("note.txt", "hello")
        ctx.add_artifact("blob.bin", b"\x00\x01")
        return {"n": state["n"] * ctx.args.get("factor", 2)}

    @register_function("test_fn_mutates", replace=True)
    def mutates(state: dict, ctx: NodeContext) -> None:
        state["n"] = "overwritten"

    @register_function("test_fn_bad_return", replace=True)
    def bad_return(state: dict, ctx: NodeContext) -> list:
        return [1]

    @register_function("test_fn_raises", replace=True)
    def raises(state: dict, ctx: NodeContext) -> dict:
        raise ValueError("bad value")

    CALLS.clear()
    yield
    for name in ("test_fn_double", "test_fn_mutates", "test_fn_bad_return", "test_fn_raises"):
        registry.unregister(name)


def test_function_gets_args_metadata_and_returns_an_update() -> None:
    spec = chain(("f", {"kind": "function", "function": "test_fn_double", "args": {"factor": 3}}))
    results = run_all(spec, {"n": 2}, RunContext(metadata={"run_id": "r1"}))
    assert results[0].update == {"n": 6}
    assert results[-1].state == {"n": 6}
    assert CALLS == [{"args": {"factor": 3}, "metadata": {"run_id": "r1"}, "attempt": 1}]
    assert results[0].events == [("custom.event", {"n": 2})]
    artifacts = {a.name: a for a in results[0].artifacts}
    assert json.loads(artifacts["numbers.json"].data) == {"n": 2}
    assert artifacts["numbers.json"].content_type == "application/json"
    assert artifacts["note.txt"].data == b"hello"
    assert artifacts["note.txt"].content_type.startswith("text/plain")
    assert artifacts["blob.bin"].content_type == "application/octet-stream"


def test_function_returning_none_changes_nothing_and_cannot_mutate_the_checkpoint() -> None:
    spec = chain(("f", {"kind": "function", "function": "test_fn_mutates"}))
    results = run_all(spec, {"n": 1})
    assert results[-1].state == {"n": 1}


def test_function_returning_a_non_dict_fails_fatally() -> None:
    results = run_all(chain(("f", {"kind": "function", "function": "test_fn_bad_return"})))
    assert results[-1].run_error["cause"]["code"] == "function_error"
    assert results[-1].run_error["fatal"] is True


def test_unexpected_exception_becomes_a_node_error() -> None:
    results = run_all(chain(("f", {"kind": "function", "function": "test_fn_raises"})))
    assert results[-1].error == {"code": "node_error", "message": "ValueError: bad value"}


def test_specs_name_registered_functions_never_import_paths() -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(chain(("f", {"kind": "function", "function": "os.system"})))
    assert "not registered" in str(info.value)


def test_registering_a_different_function_under_a_taken_name_is_refused() -> None:
    with pytest.raises(ValueError):
        register_function("test_fn_double")(lambda state, ctx: {})


def test_declared_artifacts_are_evaluated_against_the_new_state() -> None:
    spec = chain(
        (
            "t",
            {
                "kind": "transform",
                "set": {"total": "state.a + state.b"},
                "artifacts": [
                    {"name": "report.json", "json": "{'total': state.total, 'run': run.id}"},
                    {"name": "summary.txt", "text": "Total is {{ state.total }}"},
                    {"name": "page.html", "text": "<b>{{ state.total }}</b>"},
                    {
                        "name": "data.csv",
                        "text": "a,b\n{{ state.a }},{{ state.b }}",
                        "content_type": "text/csv",
                    },
                ],
            },
        )
    )
    results = run_all(spec, {"a": 1, "b": 2}, RunContext(metadata={"id": "run-7"}))
    artifacts = {a.name: a for a in results[0].artifacts}
    assert json.loads(artifacts["report.json"].data) == {"total": 3, "run": "run-7"}
    assert artifacts["summary.txt"].data == b"Total is 3"
    assert artifacts["page.html"].content_type.startswith("text/html")
    assert artifacts["data.csv"].content_type == "text/csv"


def test_builtin_functions() -> None:
    doc = (
        "Graphs run durably. Graphs recover from crashes.\n\n"
        "Workers claim runs and graphs resume from checkpoints."
    )
    spec = chain(
        ("count", {"kind": "function", "function": "word_count", "args": {"output": "stats"}}),
        ("keys", {"kind": "function", "function": "extract_keywords", "args": {"top": 2}}),
        ("chunks", {"kind": "function", "function": "chunk_text", "args": {"size": 5}}),
    )
    state = run_all(spec, {"document": doc})[-1].state
    assert state["stats"] == {"words": 15, "sentences": 3, "paragraphs": 2, "reading_minutes": 0.1}
    assert state["keywords"] == ["graphs", "checkpoints"]
    assert all(len(chunk.split()) <= 5 for chunk in state["chunks"])
    assert " ".join(state["chunks"]).split() == doc.split()
