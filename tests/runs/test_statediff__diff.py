"""runs/statediff.py: the step inspector's key-by-key state diff and bounded renderings."""

from __future__ import annotations

from runs.statediff import Shown, diff_states, key_path, truncated_paths


def ops(before: dict, after: dict, **kw: int) -> dict[str, str]:
    return {c.path: c.op for c in diff_states(before, after, **kw).changes}


def test_added_changed_and_removed_keys_at_every_level() -> None:
    before = {"a": 1, "gone": True, "m": {"x": 1, "y": {"deep": [1]}, "old": 0}}
    after = {"a": 2, "new": None, "m": {"x": 1, "y": {"deep": [1, 2]}, "fresh": "s"}}
    assert ops(before, after) == {
        "a": "changed",
        "new": "added",
        "m.y.deep": "changed",
        "m.fresh": "added",
        "m.old": "removed",
        "gone": "removed",
    }


def test_equal_states_have_no_changes_and_true_is_not_one() -> None:
    assert ops({"a": [1, {"b": 2}]}, {"a": [1, {"b": 2}]}) == {}
    assert ops({"n": 1}, {"n": 1.0}) == {}  # the same JSON number
    assert ops({"f": 1}, {"f": True}) == {"f": "changed"}


def test_a_value_changing_type_is_one_change() -> None:
    assert ops({"v": {"a": 1}}, {"v": [1]}) == {"v": "changed"}
    assert ops({"v": "text"}, {"v": {"a": 1}}) == {"v": "changed"}


def test_changes_past_the_limit_are_counted_not_kept() -> None:
    diff = diff_states({}, {f"k{i}": i for i in range(50)}, limit=10)
    assert len(diff.changes) == 10 and diff.omitted == 40
    assert diff.counts == {"added": 10, "changed": 0, "removed": 0}


def test_nesting_past_the_depth_is_compared_whole() -> None:
    before = {"a": {"b": {"c": {"d": 1}}}}
    after = {"a": {"b": {"c": {"d": 2}}}}
    assert ops(before, after, max_depth=2) == {"a.b": "changed"}
    assert ops(before, after) == {"a.b.c.d": "changed"}


def test_odd_keys_are_quoted_in_paths() -> None:
    assert key_path("", "plain_key") == "plain_key"
    assert key_path("m", "with space") == 'm["with space"]'
    assert key_path("m", "a.b") == 'm["a.b"]'
    assert ops({}, {"m": {}}) == {"m": "added"}
    assert ops({"m": {}}, {"m": {"1": 0}}) == {'m["1"]': "added"}


def test_long_values_have_a_preview_and_a_clipped_whole() -> None:
    short = Shown.of({"a": 1})
    assert short.preview == '{"a": 1}' and short.full is None
    long = Shown.of("x" * 30_000)
    assert len(long.preview) == 160 and long.preview.endswith("…")
    assert long.full is not None and long.full.clipped and long.full.chars == 30_002
    assert len(long.full.text) == 20_000


def test_event_cap_markers_are_recognised_and_located() -> None:
    marker = {"truncated": True, "bytes": 9002}
    assert Shown.of(marker).truncated_bytes == 9002
    assert Shown.of({"truncated": True, "bytes": 1, "other": 1}).truncated_bytes is None
    update = {"blob": marker, "small": 1, "nested": {"big": {"truncated": True, "bytes": 70}}}
    assert truncated_paths(update) == [("blob", 9002), ("nested.big", 70)]
    assert truncated_paths(marker) == [("(the whole update)", 9002)]
