"""Exceptions and problem records shared by every part of the engine."""

from __future__ import annotations

from typing import Any, NamedTuple


class Problem(NamedTuple):
    """One thing wrong with a spec or an input; `where` names the node, edge or field."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


class SpecError(Exception):
    """A graph spec failed validation; `problems` lists every problem found, not just the first."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        super().__init__(self._describe())

    def _describe(self) -> str:
        count = len(self.problems)
        lines = [f"invalid graph spec ({count} problem{'s' if count != 1 else ''}):"]
        lines.extend(f"  - {problem}" for problem in self.problems)
        return "\n".join(lines)


class RunCancelled(Exception):
    """The run's cancel token fired; the step in flight is abandoned and yields nothing."""

    def __init__(self, reason: str = "cancelled") -> None:
        self.reason = reason
        super().__init__(reason)


class NodeError(Exception):
    """A node failed.

    `retryable` errors are retried under the node's `retry` policy. `fatal` errors
    (configuration, auth, validation) are never retried and never resurrected.
    """

    def __init__(
        self,
        code: str,
        message: str,
        retryable: bool = True,
        fatal: bool = False,
        details: dict[str, Any] | None = None,
    ) -> None:
        self.code = code
        self.message = message
        self.retryable = retryable and not fatal
        self.fatal = fatal
        self.details = details or {}
        super().__init__(f"{code}: {message}")

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            data["details"] = self.details
        return data


class RunFailed(NodeError):
    """A node outcome that ends the run outright: no retry and no `on_error` edge.

    Used for a rejected approval without `on_reject`, which DESIGN defines as a run failure
    rather than a node failure to route around.
    """

    def __init__(self, code: str, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(code, message, retryable=False, fatal=True, details=details)


class ExpressionError(NodeError):
    """An expression or template failed to compile or evaluate (including sandbox refusals)."""

    code_name = "expression_error"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(self.code_name, message, retryable=False, fatal=True, details=details)

    def located(self, node: str | None, key: str | None, source: str) -> ExpressionError:
        """The same error naming where it happened: node, key (`set.total`, `prompt`...)."""
        if node is None and key is None:
            return self
        where = " ".join(
            part
            for part in (f"node {node!r}" if node else "", f"key {key!r}" if key else "")
            if part
        )
        message = f"{where}: {self.message}" if where else self.message
        details = {**self.details, "node": node, "key": key, "source": source[:200]}
        error = type(self).__new__(type(self))
        ExpressionError.__init__(error, message, details=details)
        return error


class ExpressionLimit(ExpressionError):
    """An expression would build a value over the per-value cap, or run past its budget.

    `details.limit` names the bound: max_value_bytes, int_bits, work, steps, costly_input,
    depth.
    """

    code_name = "expression_limit"

    def __init__(
        self, message: str, *, limit: str = "", details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message, details={"limit": limit, **(details or {})})
