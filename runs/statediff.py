"""What a step changed, for people: a key-by-key diff of two states and bounded renderings of
JSON values (short one-line previews, longer texts clipped with their full size said).

Pure functions over plain JSON values (no Django), so the step inspector's view stays thin and
this is testable on its own. Everything is bounded: the diff stops at `limit` changes and
`max_depth` levels, renderings at a number of characters, so a large state costs one pass.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

PREVIEW_CHARS = 160
FULL_CHARS = 20_000
MAX_CHANGES = 200
MAX_DEPTH = 6

_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")

Op = Literal["added", "changed", "removed"]


def is_marker(value: Any) -> bool:
    """A value the event cap replaced (runs/services/steps.py `capped`)."""
    return (
        isinstance(value, dict)
        and set(value) == {"truncated", "bytes"}
        and value.get("truncated") is True
        and isinstance(value.get("bytes"), int)
    )


def compact(value: Any) -> str:
    return json.dumps(value, separators=(", ", ": "), ensure_ascii=False, default=str)


def pretty(value: Any, limit: int = FULL_CHARS) -> Rendered:
    """Indented JSON, clipped to `limit` characters."""
    text = json.dumps(value, indent=2, ensure_ascii=False, default=str)
    if len(text) <= limit:
        return Rendered(text=text, chars=len(text), clipped=False)
    return Rendered(text=text[:limit], chars=len(text), clipped=True)


@dataclass(frozen=True)
class Rendered:
    text: str
    chars: int
    clipped: bool


@dataclass(frozen=True)
class Shown:
    """A value as a one-line preview, and the whole of it when the preview had to be cut."""

    preview: str
    full: Rendered | None
    truncated_bytes: int | None = None
    missing: bool = False

    @classmethod
    def of(cls, value: Any, *, preview_chars: int = PREVIEW_CHARS) -> Shown:
        if is_marker(value):
            return cls(preview="", full=None, truncated_bytes=value["bytes"])
        text = compact(value)
        if len(text) <= preview_chars:
            return cls(preview=text, full=None)
        return cls(preview=text[: preview_chars - 1] + "…", full=pretty(value))

    @classmethod
    def absent(cls) -> Shown:
        return cls(preview="", full=None, missing=True)


@dataclass(frozen=True)
class Change:
    path: str
    op: Op
    before: Shown
    after: Shown


@dataclass(frozen=True)
class Diff:
    changes: list[Change]
    omitted: int  # changes past the limit, counted but not shown

    @property
    def counts(self) -> dict[str, int]:
        out = {"added": 0, "changed": 0, "removed": 0}
        for change in self.changes:
            out[change.op] += 1
        return out


def key_path(parent: str, key: str) -> str:
    """`a.b` for plain keys, `a["b c"]` for the rest, so a path reads back unambiguously."""
    if _PLAIN_KEY.fullmatch(key):
        return f"{parent}.{key}" if parent else key
    return f"{parent}[{json.dumps(key, ensure_ascii=False)}]"


def diff_states(
    before: dict[str, Any],
    after: dict[str, Any],
    *,
    limit: int = MAX_CHANGES,
    max_depth: int = MAX_DEPTH,
) -> Diff:
    """Keys added, changed and removed from `before` to `after`. Nested objects are compared
    key by key (a change deep inside names its path); lists and scalars as whole values."""
    raw: list[tuple[str, Op, Any, Any]] = []
    omitted = 0

    def note(path: str, op: Op, old: Any, new: Any) -> None:
        nonlocal omitted
        if len(raw) < limit:
            raw.append((path, op, old, new))
        else:
            omitted += 1

    def walk(old: dict[str, Any], new: dict[str, Any], parent: str, depth: int) -> None:
        for key, value in new.items():
            path = key_path(parent, str(key))
            if key not in old:
                note(path, "added", None, value)
            elif isinstance(value, dict) and isinstance(old[key], dict) and depth < max_depth:
                walk(old[key], value, path, depth + 1)
            elif not _same(old[key], value):
                note(path, "changed", old[key], value)
        for key, value in old.items():
            if key not in new:
                note(key_path(parent, str(key)), "removed", value, None)

    walk(before or {}, after or {}, "", 1)
    changes = [
        Change(
            path=path,
            op=op,
            before=Shown.absent() if op == "added" else Shown.of(old),
            after=Shown.absent() if op == "removed" else Shown.of(new),
        )
        for path, op, old, new in raw
    ]
    return Diff(changes=changes, omitted=omitted)


def _same(a: Any, b: Any) -> bool:
    # JSON equality: 1 and 1.0 are the same number, but True is not 1.
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return bool(a == b)


def truncated_paths(value: Any, *, max_depth: int = 4) -> list[tuple[str, int]]:
    """Where the event cap cut `value` (a step's stored update), with each cut value's size."""
    found: list[tuple[str, int]] = []

    def walk(node: Any, parent: str, depth: int) -> None:
        if is_marker(node):
            found.append((parent or "(the whole update)", int(node["bytes"])))
        elif isinstance(node, dict) and depth < max_depth:
            for key, item in node.items():
                walk(item, key_path(parent, str(key)), depth + 1)

    walk(value, "", 0)
    return found
