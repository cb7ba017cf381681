"""A spec's platform settings beyond its graph: `limits` (per-graph concurrency) and
`triggers` (events that start it). Checked with the rest of the spec; read by runs/services/."""

from __future__ import annotations

import re
from typing import Any, cast

from .speccheck import SpecCheck
from .values import is_int

EVENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,99}$")
LIMIT_FIELDS = frozenset({"max_concurrent_runs"})
TRIGGER_FIELDS = frozenset({"event", "input", "description"})
MAX_TRIGGERS = 20
MAX_TRIGGER_INPUT_KEYS = 50
# Far above any tenant's cap: the tenant's own max_concurrent_runs applies on top.
MAX_CONCURRENCY = 100_000


def check_limits(raw: dict, check: SpecCheck) -> None:
    limits = raw.get("limits")
    if limits is None:
        return
    if not isinstance(limits, dict):
        check.add("limits", 'must be an object like {"max_concurrent_runs": 2}')
        return
    for key in sorted(set(limits) - LIMIT_FIELDS):
        check.add(f"limits.{key}", "unknown field (known: max_concurrent_runs)")
    cap = limits.get("max_concurrent_runs")
    valid = is_int(cap) and 1 <= cast(int, cap) <= MAX_CONCURRENCY
    if "max_concurrent_runs" in limits and not valid:
        check.add(
            "limits.max_concurrent_runs",
            f"must be an integer from 1 to {MAX_CONCURRENCY:,}, got {cap!r}",
        )


def check_triggers(raw: dict, check: SpecCheck) -> None:
    triggers = raw.get("triggers")
    if triggers is None:
        return
    if not isinstance(triggers, list):
        check.add("triggers", 'must be a list like [{"event": "order.created"}]')
        return
    if len(triggers) > MAX_TRIGGERS:
        check.add("triggers", f"{len(triggers)} triggers; at most {MAX_TRIGGERS}")
        return
    seen: set[str] = set()
    for i, trigger in enumerate(triggers):
        where = f"triggers[{i}]"
        if not isinstance(trigger, dict):
            check.add(where, 'must be an object like {"event": "order.created"}')
            continue
        for key in sorted(set(trigger) - TRIGGER_FIELDS):
            check.add(where, f"unknown field {key!r} (known: event, input, description)")
        event = trigger.get("event")
        if not isinstance(event, str) or not EVENT_NAME.fullmatch(event):
            check.add(
                f"{where}.event",
                "must be an event name: 1-100 letters, digits, '.', '_', ':', '/' or '-', "
                f"starting with a letter or digit; got {event!r}",
            )
        elif event in seen:
            check.add(f"{where}.event", f"event {event!r} is subscribed twice")
        else:
            seen.add(event)
        mapping = trigger.get("input")
        if mapping is None:
            continue
        if not isinstance(mapping, dict):
            check.add(f"{where}.input", "must map input keys to expressions over `payload`")
            continue
        if len(mapping) > MAX_TRIGGER_INPUT_KEYS:
            check.add(f"{where}.input", f"at most {MAX_TRIGGER_INPUT_KEYS} keys")
            continue
        for key, source in mapping.items():
            check.expression(f"{where}.input.{key}", source, "an input expression")


def spec_concurrency(raw: dict) -> int | None:
    """The spec's `limits.max_concurrent_runs` (a checked spec), or None."""
    limits = raw.get("limits") or {}
    cap: Any = limits.get("max_concurrent_runs")
    return int(cap) if cap is not None else None


def spec_triggers(raw: dict) -> list[dict[str, Any]]:
    """The spec's triggers (a checked spec): [{"event", "input" or None}]."""
    return [{"event": t["event"], "input": t.get("input")} for t in (raw.get("triggers") or [])]
