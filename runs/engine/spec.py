"""Graph specs: parse JSON or YAML, validate everything, and freeze the result."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import yaml

from .errors import Problem, SpecError
from .validation import check_raw

DEFAULT_MAX_STEPS = 100
DEFAULT_MAX_DEPTH = 5


def canonical_json(data: Any) -> str:
    """The JSON a spec hash is computed over: sorted keys, compact separators."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True, eq=False)
class GraphSpec:
    """An immutable, validated graph spec. Build it with `parse_spec`."""

    raw: dict
    name: str
    start: str
    nodes: dict[str, dict]
    edges: list[dict]
    reducers: dict[str, str]
    defaults: dict
    input_schema: dict | None
    max_steps: int = DEFAULT_MAX_STEPS
    #: None: the spec does not say; the runtime applies the tenant's (default 3).
    max_resurrections: int | None = None
    max_depth: int = DEFAULT_MAX_DEPTH
    hash: str = ""
    # Per-spec caches (the executor's compiled plan); not part of the spec's identity.
    cache: dict = field(default_factory=dict, repr=False)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GraphSpec) and other.hash == self.hash

    def __hash__(self) -> int:
        return hash(self.hash)


def load_text(text: str | bytes) -> Any:
    """Decode a spec document: JSON first, then YAML (a superset, but slower and laxer)."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SpecError([Problem("spec", f"not UTF-8 text: {exc}")]) from None
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError([Problem("spec", f"neither valid JSON nor valid YAML: {exc}")]) from None


def check_spec(data: dict | str | bytes) -> list[Problem]:
    """Every problem in a spec without raising; an empty list means it is valid."""
    try:
        parse_spec(data)
    except SpecError as exc:
        return exc.problems
    return []


def parse_spec(data: dict | str | bytes, *, stored: bool = False) -> GraphSpec:
    """Parse and validate a spec (a dict, or JSON/YAML text).

    Raises SpecError listing ALL problems found; nothing runs until a spec parses. `stored`:
    a version already accepted, whose operator-policy checks (prices) run at run time instead.
    """
    raw = load_text(data) if isinstance(data, (str, bytes)) else data
    problems = check_raw(raw, stored=stored)
    if problems:
        raise SpecError(problems)
    # A private copy through JSON: C speed, where deepcopy took 0.36 s over a 1 MB spec.
    text = canonical_json(raw)
    raw = json.loads(text)
    state = raw.get("state") or {}
    return GraphSpec(
        raw=raw,
        name=raw["name"],
        start=raw["start"],
        nodes=raw["nodes"],
        edges=list(raw.get("edges") or []),
        reducers={key: entry.get("reducer", "replace") for key, entry in state.items()},
        defaults={key: entry["default"] for key, entry in state.items() if "default" in entry},
        input_schema=raw.get("input_schema"),
        max_steps=raw.get("max_steps", DEFAULT_MAX_STEPS),
        max_resurrections=raw.get("max_resurrections"),
        max_depth=raw.get("max_depth", DEFAULT_MAX_DEPTH),
        hash=hashlib.sha256(text.encode("utf-8")).hexdigest(),
    )
