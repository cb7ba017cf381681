"""Node output the database cannot store (NaN, infinities, NUL) fails the node, not the commit."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator

import pytest

from runs.engine import NodeContext, register_function
from runs.engine.functions import registry
from runs.engine.values import Unstorable, find_unstorable, storable_copy, storable_size

from .helpers import LocalServer, chain, run_all, send
from .test_nodes__http import http, local

BAD: dict[str, object] = {}


@pytest.fixture(autouse=True)
def functions() -> Iterator[None]:
    @register_function("test_fn_bad_output", replace=True)
    def bad_output(state: dict, ctx: NodeContext) -> dict:
        return dict(BAD)

    yield
    registry.unregister("test_fn_bad_output")


@pytest.mark.parametrize(
    ("value", "path"),
    [
        ({"a": {"b": [1, float("nan")]}}, "a.b[1]"),
        ({"x": float("inf")}, "x"),
        ({"x": [-math.inf]}, "x[0]"),
        ({"s": "a\x00b"}, "s"),
        ({"d": {"k\x00": 1}}, "d.'k\\x00'"),
        ({"o": {1, 2}}, "o"),
    ],
)
def test_storable_size_names_the_path_of_what_cannot_be_stored(value: object, path: str) -> None:
    with pytest.raises(Unstorable) as info:
        storable_size(value)
    assert info.value.path == path


def test_storable_size_is_the_compact_json_size_and_an_escaped_backslash_is_fine() -> None:
    value = {"text": "a\\u0000b", "n": [1, 2.5, None, True], "ü": "ö"}
    assert storable_size(value) == len(json.dumps(value, separators=(",", ":")))
    assert storable_size(value) >= len(
        json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    )
    assert find_unstorable(value) is None


def test_deep_and_cyclic_values_are_refused_without_a_crash() -> None:
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(Unstorable):
        storable_size({"deep": deep})
    cyclic: dict = {}
    cyclic["self"] = cyclic
    with pytest.raises(Unstorable):
        storable_size(cyclic)


def test_storable_copy_replaces_what_cannot_be_stored() -> None:
    copy = storable_copy({"m": "a\x00b", "n": float("nan"), "l": [math.inf], "o": object})
    assert copy["m"] == "ab" and copy["n"] == "nan" and copy["l"] == ["inf"]
    json.dumps(copy, allow_nan=False)


@pytest.mark.parametrize(
    ("bad", "path"),
    [
        ({"score": float("nan")}, "score"),
        ({"rows": [{"v": math.inf}]}, "rows[0].v"),
        ({"name": "x\x00y"}, "name"),
    ],
)
def test_function_node_with_unstorable_output_fails_with_invalid_output(
    bad: dict, path: str
) -> None:
    BAD.clear()
    BAD.update(bad)
    results = run_all(chain(("f", {"kind": "function", "function": "test_fn_bad_output"})))
    last = results[-1]
    assert last.status == "failed" and last.node == "f"
    assert last.error is not None and last.error["code"] == "invalid_output"
    assert last.error["details"] == {"node": "f", "path": path}
    assert last.run_error is not None and last.run_error["code"] == "invalid_output"
    assert "'f'" in last.run_error["message"] and path in last.run_error["message"]
    assert last.state == {}  # nothing of it was merged


def test_transform_computing_nan_fails_the_node_and_on_error_edges_still_apply() -> None:
    spec = {
        "name": "t",
        "start": "calc",
        "nodes": {
            "calc": {"kind": "transform", "set": {"x": "state.big * 10 - state.big * 10"}},
            "fallback": {"kind": "transform", "set": {"x": "0"}},
            "done": {"kind": "end"},
        },
        "edges": [
            {"from": "calc", "to": "done"},
            {"from": "calc", "to": "fallback", "on_error": True},
            {"from": "fallback", "to": "done"},
        ],
    }
    results = run_all(spec, {"big": 1e308})
    assert [r.node for r in results] == ["calc", "fallback", "done"]
    assert results[0].error is not None and results[0].error["code"] == "invalid_output"
    assert results[-1].state == {"big": 1e308, "x": 0}


def test_unstorable_output_is_retried_like_any_node_error() -> None:
    calls = []

    @register_function("test_fn_nan_once", replace=True)
    def nan_once(state: dict, ctx: NodeContext) -> dict:
        calls.append(ctx.attempt)
        return {"v": float("nan") if ctx.attempt == 1 else 1.5}

    try:
        spec = chain(
            (
                "f",
                {"kind": "function", "function": "test_fn_nan_once", "retry": {"max_attempts": 2}},
            )
        )
        results = run_all(spec)
    finally:
        registry.unregister("test_fn_nan_once")
    assert calls == [1, 2]
    assert results[-1].state == {"v": 1.5}
    assert results[0].events[0][0] == "step.retrying"


def test_http_json_with_nul_fails_the_node(server: LocalServer) -> None:
    server.route("/nul", lambda h: send(h, 200, b'{"a": "x\\u0000y"}', "application/json"))
    results = run_all(chain(("get", http(server.url + "/nul"))), ctx=local())
    assert results[-1].error is not None and results[-1].error["code"] == "invalid_output"
    assert results[-1].error["details"]["path"] == "resp.body.a"


def test_a_small_update_records_its_size() -> None:
    results = run_all(chain(("t", {"kind": "transform", "set": {"x": "'abc'"}})))
    assert results[0].update_bytes == len('{"x":"abc"}')


def test_position_at_an_unknown_node_fails_the_run_at_once() -> None:
    results = run_all(
        chain(("t", {"kind": "transform", "set": {"x": "1"}})),
        state={"x": 0},
        position={"node": "gone", "step": 3, "visits": {}},
    )
    assert len(results) == 1
    assert results[0].status == "failed" and results[0].index == 4
    assert results[0].run_error is not None
    assert results[0].run_error["code"] == "invalid_position"
    assert "gone" in results[0].run_error["message"]


def test_position_with_no_node_yields_nothing() -> None:
    spec = chain(("t", {"kind": "transform", "set": {"x": "1"}}))
    assert run_all(spec, state={"x": 5}, position={"node": None, "step": 2, "visits": {}}) == []
