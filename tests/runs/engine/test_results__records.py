from __future__ import annotations

import json

from runs.engine import Executor, Usage, initial_state, parse_spec

from .helpers import chain


def test_usage_adds_up_per_model_and_round_trips() -> None:
    total = Usage()
    one = Usage()
    one.record("gpt-4o-mini", 10, 5, 0.001)
    two = Usage()
    two.record("gpt-4o-mini", 1, 1, 0.0001)
    two.record("scripted", 3, 4, 0.0)
    total.add(one)
    total.add(two)
    assert (total.tokens_in, total.tokens_out) == (14, 10)
    assert total.by_model["gpt-4o-mini"]["calls"] == 2
    assert total.by_model["gpt-4o-mini"]["tokens_in"] == 11
    again = Usage.from_dict(json.loads(json.dumps(total.to_dict())))
    assert again == total
    assert Usage.from_dict(None) == Usage()


def test_step_results_are_json_friendly_checkpoints() -> None:
    spec = parse_spec(
        chain(
            ("a", {"kind": "transform", "set": {"x": "1"}}),
            ("b", {"kind": "llm", "provider": "scripted", "prompt": "p", "output": "o",
                   "responses": ["r"]}),
        )
    )  # fmt: skip
    for result in Executor(spec).run(initial_state(spec, {})):
        json.dumps(result.position)
        json.dumps(result.state)
        json.dumps(result.usage.to_dict())
        assert result.finished_at >= result.started_at
        assert result.duration_ms >= 0


def test_specs_compare_by_hash() -> None:
    raw = chain(("a", {"kind": "transform", "set": {"x": "1"}}))
    assert parse_spec(raw) == parse_spec(json.dumps(raw))
    assert len({parse_spec(raw), parse_spec(raw)}) == 1
