"""SpecCheck: where spec validation collects its problems, and what node kinds report through.

It lives below both `validation` (which walks a spec) and `nodes/` (whose kinds check their own
fields with it), so neither imports the other for it. It also keeps the budget of expression
code one spec may hold: parsing an expression costs ~0.1 ms plus ~5 µs per token, so
expressions and template tags are counted by their code, not their text (a long prompt of
plain text costs nearly nothing; `{{ a }}` repeated 40,000 times took 1.1 s).
"""

from __future__ import annotations

import re
from typing import Any

from .errors import ExpressionError, Problem
from .expressions import check_expression, check_template
from .values import is_int, is_number

MAX_EXPRESSIONS = 1_000  # expressions and templates
MAX_CODE_CHARS = 40_000  # expression text + template tags, each counted 16 chars extra
_TAG_OPEN = re.compile(r"\{[{%#]")
_TAG_CLOSE = {"{": "}}", "%": "%}", "#": "#}"}
_TAG_OVERHEAD = 16


def template_code(source: str, limit: int) -> int:
    """Characters of code in a template's tags (plain text is nearly free to parse).

    A linear scan that stops past `limit`: a regex for whole tags is quadratic on unclosed ones.
    """
    code = 0
    pos = 0
    while code <= limit:
        opened = _TAG_OPEN.search(source, pos)
        if opened is None:
            break
        end = source.find(_TAG_CLOSE[source[opened.end() - 1]], opened.end())
        if end < 0:
            return code + len(source) - opened.start() + _TAG_OVERHEAD
        code += end + 2 - opened.start() + _TAG_OVERHEAD
        pos = end + 2
    return code


class SpecCheck:
    """Collects problems while a spec is checked; node kinds report through it."""

    def __init__(self, raw: dict, *, stored: bool = False) -> None:
        self.raw = raw
        # A stored version passed the operator's policy (prices) of its day; kinds leave that
        # policy to run time for it, so a table change never makes a stored version unloadable.
        self.stored = stored
        self.problems: list[Problem] = []
        nodes = raw.get("nodes")
        self.nodes: dict[str, Any] = nodes if isinstance(nodes, dict) else {}
        self.expressions = 0
        self.code_chars = 0
        self.over_budget = False

    def add(self, where: str, message: str) -> None:
        self.problems.append(Problem(where, message))

    def _afford(self, where: str, code_chars: int) -> bool:
        """Count one expression or template; False once the spec holds too many to check."""
        self.expressions += 1
        self.code_chars += code_chars
        if self.expressions <= MAX_EXPRESSIONS and self.code_chars <= MAX_CODE_CHARS:
            return True
        if not self.over_budget:
            self.over_budget = True
            self.add(
                where,
                f"the spec holds too much expression code: at most {MAX_EXPRESSIONS:,} "
                f"expressions and templates with {MAX_CODE_CHARS:,} characters of code in all "
                "(the rest were not checked)",
            )
        return False

    def expression(self, where: str, source: Any, label: str) -> None:
        if not isinstance(source, str) or not source.strip():
            self.add(where, f"{label} must be a non-empty expression string")
            return
        if not self._afford(where, len(source) + _TAG_OVERHEAD):
            return
        try:
            check_expression(source)
        except ExpressionError as exc:
            self.add(where, f"{label}: {exc.message}")

    def template(self, where: str, source: Any, label: str, required: bool = True) -> None:
        if source is None and not required:
            return
        if not isinstance(source, str):
            self.add(where, f"{label} must be a template string")
            return
        remaining = MAX_CODE_CHARS - self.code_chars
        if "{" in source and not self._afford(where, template_code(source, remaining)):
            return
        try:
            check_template(source)
        except ExpressionError as exc:
            self.add(where, f"{label}: {exc.message}")

    def node_ref(self, where: str, target: Any, label: str) -> bool:
        if not isinstance(target, str) or not target:
            self.add(where, f"{label} must name a node")
            return False
        if target not in self.nodes:
            self.add(where, f"{label} names unknown node {target!r}")
            return False
        return True

    def key(self, where: str, node: dict, field: str, required: bool = True) -> None:
        """A state key the node writes to."""
        value = node.get(field)
        if value is None and not required:
            return
        if not isinstance(value, str) or not value:
            self.add(where, f"`{field}` must name a state key")

    def number(
        self,
        where: str,
        node: dict,
        field: str,
        *,
        minimum: float = 0,
        exclusive: bool = False,
        required: bool = False,
        integer: bool = False,
    ) -> None:
        if field not in node:
            if required:
                self.add(where, f"`{field}` is required")
            return
        value = node[field]
        ok = is_int(value) if integer else is_number(value)
        if ok:
            ok = value > minimum if exclusive else value >= minimum
        if not ok:
            kind = "an integer" if integer else "a number"
            bound = f"> {minimum}" if exclusive else f">= {minimum}"
            self.add(where, f"`{field}` must be {kind} {bound}, got {value!r}")
