"""A spec's `limits` and `triggers`: validated with the rest of the spec, each problem named."""

from __future__ import annotations

from typing import Any

import pytest

from runs.engine import Problem, SpecError, parse_spec
from runs.engine.subscriptions import spec_concurrency, spec_triggers

from .helpers import chain as _chain


def chain() -> dict:
    return _chain(("a", {"kind": "transform", "set": {"x": "1"}}))


def problems(**extra: Any) -> list[Problem]:
    with pytest.raises(SpecError) as info:
        parse_spec({**chain(), **extra})
    return info.value.problems


def wheres(**extra: Any) -> set[str]:
    return {p.where for p in problems(**extra)}


def test_valid_limits_and_triggers_parse_and_are_read_back() -> None:
    spec = parse_spec(
        {
            **chain(),
            "limits": {"max_concurrent_runs": 2},
            "triggers": [
                {"event": "order.created"},
                {"event": "billing/invoice:paid", "input": {"text": "payload.note | upper"}},
            ],
        }
    )
    assert spec_concurrency(spec.raw) == 2
    assert spec_triggers(spec.raw) == [
        {"event": "order.created", "input": None},
        {"event": "billing/invoice:paid", "input": {"text": "payload.note | upper"}},
    ]
    bare = parse_spec(chain())
    assert spec_concurrency(bare.raw) is None and spec_triggers(bare.raw) == []


@pytest.mark.parametrize(
    ("limits", "where"),
    [
        ([], "limits"),
        ({"max_concurrent_runs": 0}, "limits.max_concurrent_runs"),
        ({"max_concurrent_runs": -1}, "limits.max_concurrent_runs"),
        ({"max_concurrent_runs": 1.5}, "limits.max_concurrent_runs"),
        ({"max_concurrent_runs": True}, "limits.max_concurrent_runs"),
        ({"max_concurrent_runs": "2"}, "limits.max_concurrent_runs"),
        ({"max_concurrent_runs": 10**9}, "limits.max_concurrent_runs"),
        ({"max_concurent_runs": 2}, "limits.max_concurent_runs"),
    ],
)
def test_bad_limits_are_named(limits: Any, where: str) -> None:
    assert where in wheres(limits=limits)


@pytest.mark.parametrize(
    ("triggers", "where"),
    [
        ({"event": "x"}, "triggers"),
        ([{"event": "x"}] * 21, "triggers"),
        (["order.created"], "triggers[0]"),
        ([{}], "triggers[0].event"),
        ([{"event": ""}], "triggers[0].event"),
        ([{"event": "has space"}], "triggers[0].event"),
        ([{"event": "x" * 101}], "triggers[0].event"),
        ([{"event": 5}], "triggers[0].event"),
        ([{"event": "a"}, {"event": "a"}], "triggers[1].event"),
        ([{"event": "a", "when": "true"}], "triggers[0]"),
        ([{"event": "a", "input": "payload"}], "triggers[0].input"),
        ([{"event": "a", "input": {"k": "payload +"}}], "triggers[0].input.k"),
        ([{"event": "a", "input": {"k": ""}}], "triggers[0].input.k"),
        ([{"event": "a", "input": {f"k{i}": "1" for i in range(51)}}], "triggers[0].input"),
    ],
)
def test_bad_triggers_are_named(triggers: Any, where: str) -> None:
    assert where in wheres(triggers=triggers)


def test_trigger_expressions_count_against_the_specs_expression_budget() -> None:
    many = [
        {"event": f"e{i}", "input": {f"k{j}": "payload.a" for j in range(50)}} for i in range(20)
    ]
    assert any("too much expression code" in p.message for p in problems(triggers=many))
