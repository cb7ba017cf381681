"""The step loop: run a node, merge its update, pick the next node, yield a checkpoint.

Nothing here persists anything: after every step the caller gets a StepResult with the new
state and a JSON position, stores what it likes, and may stop iterating at any step boundary.
Running again from any yielded position (with that step's state) continues exactly as an
uninterrupted run would, because every decision depends only on (state, position): routing on
state, scripted responses and suspension ids on the per-node visit counts in the position.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .context import RunContext
from .errors import ExpressionError, NodeError, RunFailed
from .results import StepResult, Usage
from .runner import NodeRun, NodeRunner, plan_for
from .spec import GraphSpec
from .values import storable_copy

# Node error codes that become the run's error code as they are; the rest are `node_failed`.
RUN_LEVEL_CODES = frozenset(
    {
        "expression_error",
        "expression_limit",
        "depth_exceeded",
        "approval_rejected",
        "reducer_error",
        "invalid_output",
        "merge_conflict",
    }
)


def run_error(code: str, message: str, node: str, *, fatal: bool = True, **extra: Any) -> dict:
    return {"code": code, "message": message, "node": node, "fatal": fatal, **extra}


def node_run_error(node: str, error: NodeError) -> dict:
    """The run's error when `node` failed for good."""
    if error.code in RUN_LEVEL_CODES:
        named = f"{node!r}" in error.message
        message = error.message if named else f"node {node!r}: {error.message}"
        extra = {"details": error.details} if error.details else {}
        return run_error(error.code, message, node, fatal=error.fatal, **extra)
    return run_error(
        "node_failed",
        f"node {node!r} failed: {error.code}: {error.message}",
        node,
        fatal=error.fatal,
        cause=error.to_dict(),
    )


class Executor:
    """Runs a parsed graph step by step (see `run`)."""

    def __init__(self, spec: GraphSpec, ctx: RunContext | None = None) -> None:
        self.spec = spec
        self.ctx = ctx or RunContext()
        self.plan = plan_for(spec)
        self.runner = NodeRunner(spec, self.ctx, self.plan)

    def run(self, state: dict, position: dict | None = None) -> Iterator[StepResult]:
        """Run from `position` (None: the start node, step 0), yielding one StepResult per step.

        The generator ends after a result with `done`, with `run_error`, or with status
        "suspended". Cancellation is checked before each step and inside nodes and raises
        RunCancelled (the step in flight yields nothing). `state` is never mutated.

        A position with no node is a run that already ended (the final checkpoint of a run,
        forked): nothing is yielded and the caller ends the run with `state` as it is. A
        position naming a node the graph lacks yields one failed step (`invalid_position`).
        """
        if position is None:
            position = {"node": self.spec.start, "step": 0, "visits": {}}
        current = position.get("node")
        if current is None:
            return  # the run already ended
        step = int(position.get("step", 0))
        if not isinstance(current, str) or current not in self.plan.nodes:
            yield self._invalid_position(current, state, position, step)
            return
        node: str = current
        visits = {str(k): int(v) for k, v in (position.get("visits") or {}).items()}
        cancel = self.ctx.cancel
        while True:
            cancel.raise_if_cancelled()
            result = self._step(node, state, step, visits)
            yield result
            nxt = result.position["node"]
            if result.done or result.run_error is not None or result.status == "suspended":
                return
            assert nxt is not None
            node, state, step, visits = nxt, result.state, result.index, result.position["visits"]

    def _invalid_position(self, node: Any, state: dict, position: dict, step: int) -> StepResult:
        now = self.ctx.now()
        name = str(node)
        message = f"the run's position names node {name!r}, which graph {self.spec.name!r} lacks"
        return StepResult(
            index=step + 1, node=name, status="failed", attempt=0, started_at=now,
            finished_at=now, update={}, state=state, position=position, usage=Usage(),
            events=[], artifacts=[], run_error=run_error("invalid_position", message, name),
        )  # fmt: skip

    def _step(self, node: str, state: dict, step: int, visits: dict[str, int]) -> StepResult:
        """Run one node and decide where the run goes next."""
        now = self.ctx.now
        index = step + 1
        here = {"node": node, "step": step, "visits": visits}
        started = now()
        if step >= self.spec.max_steps:
            message = f"run reached max_steps={self.spec.max_steps} before node {node!r}"
            return StepResult(
                index=index, node=node, status="failed", attempt=0, started_at=started,
                finished_at=now(), update={}, state=state, position=here, usage=Usage(),
                events=[], artifacts=[], run_error=run_error("max_steps", message, node),
            )  # fmt: skip
        visit = visits.get(node, 0)
        result = self.runner.execute(node, state, visit, self.ctx.cancel, index=index)
        finished = now()
        if result.suspension is not None:
            # Resume AT the node: it asks `resolve` again and completes once answered.
            return StepResult(
                index=index, node=node, status="suspended", attempt=result.attempt,
                started_at=started, finished_at=finished, update={}, state=state, position=here,
                usage=result.usage, events=result.events, artifacts=[],
                suspension=result.suspension,
            )  # fmt: skip
        # Only nodes that can behave differently on a later visit are counted (scripted
        # responses, occurrence ids); a pure node's visits change nothing, and counting them
        # would grow every checkpoint of a long chain.
        after = visits if self.plan.nodes[node].kind.pure else {**visits, node: visit + 1}
        if result.error is not None:
            return self._after_failure(result, state, index, started, finished, here, after)
        new_state = result.state if result.state is not None else state
        target, error = self._route(node, new_state, result, index)
        position = {"node": target, "step": index, "visits": after}
        if error is not None and error["code"] != "max_steps":
            position["node"] = None  # nothing to resume; max_steps keeps the next node
        return StepResult(
            index=index, node=node, status="completed", attempt=result.attempt,
            started_at=started, finished_at=finished, update=result.update,
            update_bytes=result.update_bytes, updates=result.updates, state=new_state,
            position=position, usage=result.usage, events=result.events,
            artifacts=result.artifacts, run_error=error,
            done=self.plan.nodes[node].kind.terminal,
        )  # fmt: skip

    def _route(
        self, node: str, state: dict, result: NodeRun, index: int
    ) -> tuple[str | None, dict | None]:
        """The next node, or the run error that stops the run after this step."""
        plan = self.plan.nodes[node]
        if plan.kind.terminal:
            return None, None
        target = result.route or plan.routes.simple
        if target is None:
            try:
                target = plan.routes.normal.pick(self._variables(node, state))
            except ExpressionError as exc:
                message = f"routing from node {node!r}: {exc.message}"
                return None, run_error(exc.code, message, node)
            if target is None:
                message = f"node {node!r} matched no edge: {plan.routes.normal.describe()}"
                return None, run_error("unrouted", message, node)
        if index >= self.spec.max_steps:
            message = (
                f"run reached max_steps={self.spec.max_steps} after node {node!r}; "
                f"next would be {target!r}"
            )
            return target, run_error("max_steps", message, node)
        return target, None

    def _variables(self, node: str, state: dict, **extra: Any) -> dict[str, Any]:
        return {"state": state, "run": self.ctx.metadata, "node": node, **extra}

    def _after_failure(
        self,
        result: NodeRun,
        state: dict,
        index: int,
        started: float,
        finished: float,
        here: dict,
        after: dict,
    ) -> StepResult:
        """A node failed after its retries: follow an `on_error` edge, or end the run."""
        node, error = result.name, result.error
        assert error is not None
        target = None
        failure = None
        if not isinstance(error, RunFailed):
            edges = self.plan.nodes[node].routes.on_error
            try:
                target = edges.pick(self._variables(node, state, error=error.to_dict()))
            except ExpressionError as exc:
                message = f"on_error routing from node {node!r}: {exc.message}"
                failure = run_error(exc.code, message, node)
        if target is None and failure is None:
            failure = node_run_error(node, error)
        # Messages may quote what a node received (a NUL in an HTTP body): keep them storable.
        failure = storable_copy(failure) if failure else None
        # Routed on: the position moves past the node. Ended: it stays AT the node, so
        # resuming it (a resurrection) runs the node again.
        position = here if failure else {"node": target, "step": index, "visits": after}
        return StepResult(
            index=index, node=node, status="failed", attempt=result.attempt, started_at=started,
            finished_at=finished, update={}, state=state, position=position, usage=result.usage,
            events=result.events, artifacts=[], error=storable_copy(error.to_dict()),
            run_error=failure,
        )  # fmt: skip
