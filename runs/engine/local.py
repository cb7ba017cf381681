"""Run a graph file in-process with no queue and no database: the engine behind `run_graph`.

- Subgraphs are looked up next to the spec file as `<graph>.json`, `.yaml` or `.yml`.
- Sleeps of any length wait in-process (Ctrl-C cancels).
- With `auto_approve`, every approval is approved (by "cli:auto-approve") and every input
  gets its schema's `default`, or null when the schema has none. Without it, the first
  approval or input ends the run as failed (`needs_decision`), since nobody can answer it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .cancel import CancelToken
from .context import HttpPolicy, RunContext
from .errors import NodeError, Problem, SpecError
from .executor import Executor
from .results import ArtifactData, Resolution, StepResult, Suspension, Usage
from .spec import GraphSpec, parse_spec
from .state import initial_state, validate_input

SPEC_SUFFIXES = (".json", ".yaml", ".yml")
AUTO = "cli:auto-approve"


def load_spec_file(path: str | Path) -> GraphSpec:
    """Parse a spec file; an unreadable file is reported as a SpecError like any other problem."""
    try:
        text = Path(path).read_bytes()
    except OSError as exc:
        raise SpecError([Problem("spec", f"cannot read {path}: {exc.strerror or exc}")]) from None
    return parse_spec(text)


@dataclass
class LocalResult:
    """How a local run ended: status is "succeeded", "failed" or "invalid_input"."""

    status: str
    state: dict
    steps: int = 0
    usage: Usage = field(default_factory=Usage)
    error: dict | None = None
    problems: list[Problem] = field(default_factory=list)
    artifacts: list[ArtifactData] = field(default_factory=list)


def auto_resolution(suspension: Suspension) -> Resolution:
    if suspension.kind == "approval":
        return Resolution(decision="approve", by=AUTO)
    if suspension.kind == "input":
        schema = suspension.data.get("schema") or {}
        return Resolution(value=schema.get("default"), by=AUTO)
    return Resolution(decision="wake", by=AUTO)


class LocalRunner:
    """Runs specs (and their subgraphs) to the end, reporting each step to `on_step`."""

    def __init__(
        self,
        base_dir: str | Path,
        *,
        auto_approve: bool = False,
        on_step: Callable[[StepResult, int], None] | None = None,
        on_delta: Callable[[str, str], None] | None = None,
        cancel: CancelToken | None = None,
        http_policy: HttpPolicy | None = None,
    ) -> None:
        self.base_dir = Path(base_dir)
        self.auto_approve = auto_approve
        self.on_step = on_step
        self.on_delta = on_delta
        self.cancel = cancel or CancelToken()
        # A developer's own machine: any public host, private addresses still refused.
        self.http_policy = http_policy or HttpPolicy(allowed_hosts=["*"])
        self.llm_config = {
            "openai": {
                "base_url": os.environ.get("OPENAI_BASE_URL", "https://api.openai.com/v1"),
                "api_key": os.environ.get("OPENAI_API_KEY", ""),
            }
        }

    def run(self, spec: GraphSpec, data: dict, depth: int = 0) -> LocalResult:
        """Run `spec` on `data` to success or failure (RunCancelled propagates)."""
        problems = validate_input(spec, data)
        if problems:
            return LocalResult("invalid_input", {}, problems=problems)
        ctx = RunContext(
            cancel=self.cancel,
            resolve=self._resolve,
            on_delta=self.on_delta,
            run_subgraph=self._run_subgraph,
            depth=depth,
            http_policy=self.http_policy,
            llm_config=self.llm_config,
            sleep_inline_max=float("inf"),
            metadata={"graph": spec.name, "graph_hash": spec.hash, "depth": depth},
        )
        state = initial_state(spec, data)
        result = LocalResult("failed", state)
        for step in Executor(spec, ctx).run(state):
            result.steps += 1
            result.state = step.state
            result.usage.add(step.usage)
            result.artifacts.extend(step.artifacts)
            if self.on_step is not None:
                self.on_step(step, depth)
            if step.done:
                result.status = "succeeded"
            elif step.run_error is not None:
                result.error = step.run_error
            elif step.status == "suspended" and step.suspension is not None:
                result.error = self._unanswered(step.suspension)
        return result

    def _resolve(self, suspension: Suspension) -> Resolution | None:
        return auto_resolution(suspension) if self.auto_approve else None

    @staticmethod
    def _unanswered(suspension: Suspension) -> dict:
        what = "a decision" if suspension.kind == "approval" else "input"
        return {
            "code": "needs_decision",
            "message": f"{suspension.kind} {suspension.id!r} at node {suspension.node!r} needs "
            f"{what}; rerun with --auto-approve to approve every approval "
            "(inputs get their schema default or null)",
            "node": suspension.node,
            "fatal": True,
        }

    def _run_subgraph(self, name: str, data: dict, depth: int, **_: object) -> dict:
        path = next(
            (
                self.base_dir / f"{name}{suffix}"
                for suffix in SPEC_SUFFIXES
                if (self.base_dir / f"{name}{suffix}").is_file()
            ),
            None,
        )
        if path is None:
            raise NodeError(
                "subgraph_failed", f"no spec for graph {name!r} in {self.base_dir}", fatal=True
            )
        try:
            spec = load_spec_file(path)
        except SpecError as exc:
            raise NodeError("subgraph_failed", f"{path.name}: {exc}", fatal=True) from None
        child = self.run(spec, data, depth)
        if child.status != "succeeded":
            error = child.error or {"message": "; ".join(map(str, child.problems))}
            raise NodeError(
                "subgraph_failed",
                f"subgraph {name!r} failed: {error.get('message')}",
                fatal=bool(error.get("fatal", True)),
            )
        return child.state
