"""Running one node: attempts, retry backoff, timeouts, state merge and declared artifacts.

Shared by the executor (top-level steps) and `parallel` (branches), so a branch has exactly the
same retry and timeout behaviour as a step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .cancel import CancelToken
from .context import NodeContext, RunContext, artifact_bytes, guess_content_type
from .errors import NodeError, RunCancelled
from .expressions import compile_expression, compile_template, evaluate, render_template
from .nodes import NodeKind, Outcome, get_kind
from .results import ArtifactData, Suspension, Usage
from .routing import Routes, compile_routes
from .state import apply_update
from .threads import call_with_cancel
from .values import Unstorable, storable_size

if TYPE_CHECKING:
    from .spec import GraphSpec


@dataclass(slots=True)
class NodePlan:
    name: str
    node: dict
    kind: NodeKind
    max_attempts: int
    backoff: float
    max_backoff: float | None
    timeout: float | None
    artifacts: list[dict]
    routes: Routes


class Plan:
    """Everything about a spec the hot path would otherwise recompute every step."""

    def __init__(self, spec: GraphSpec) -> None:
        routes = compile_routes(spec.nodes, spec.edges)
        self.nodes: dict[str, NodePlan] = {}
        for name, node in spec.nodes.items():
            kind = get_kind(node["kind"])
            assert kind is not None  # validated
            retry = node.get("retry") or {}
            artifacts = list(node.get("artifacts") or [])
            for item in artifacts:  # warm the caches
                if "json" in item:
                    compile_expression(item["json"])
                else:
                    compile_template(item["text"])
            self.nodes[name] = NodePlan(
                name=name,
                node=node,
                kind=kind,
                max_attempts=int(retry.get("max_attempts", 1)),
                backoff=float(retry.get("backoff", 0.0)),
                max_backoff=float(retry["max_backoff"]) if "max_backoff" in retry else None,
                timeout=None if kind.timeout_is_deadline else node.get("timeout"),
                artifacts=artifacts,
                routes=routes[name],
            )


def plan_for(spec: GraphSpec) -> Plan:
    plan = spec.cache.get("plan")
    if plan is None:
        plan = spec.cache["plan"] = Plan(spec)
    return plan


def backoff_delay(attempt: int, backoff: float, max_backoff: float | None) -> float:
    """Exponential: backoff, 2*backoff, 4*backoff... after attempts 1, 2, 3, capped."""
    delay = backoff * (2 ** (attempt - 1))
    return delay if max_backoff is None else min(delay, max_backoff)


@dataclass(slots=True)
class NodeRun:
    """The result of running one node to completion, failure or suspension."""

    name: str
    attempt: int
    update: dict = field(default_factory=dict)
    #: `update` as compact JSON, in bytes (an upper bound): the step's growth of the state.
    update_bytes: int = 0
    updates: list[dict] = field(default_factory=list)
    state: dict | None = None
    route: str | None = None
    suspension: Suspension | None = None
    error: NodeError | None = None
    usage: Usage = field(default_factory=Usage)
    events: list[tuple[str, dict]] = field(default_factory=list)
    artifacts: list[ArtifactData] = field(default_factory=list)


class NodeRunner:
    def __init__(self, spec: GraphSpec, ctx: RunContext, plan: Plan) -> None:
        self.spec = spec
        self.ctx = ctx
        self.plan = plan

    def execute(
        self,
        name: str,
        state: dict,
        visit: int,
        cancel: CancelToken,
        *,
        in_branch: bool = False,
        index: int = 0,
    ) -> NodeRun:
        """Run node `name` on `state` with retries. Raises RunCancelled; other failures are
        returned in `NodeRun.error` once the retry policy is exhausted."""
        plan = self.plan.nodes[name]
        run = NodeRun(name, 0)
        on_start = None if in_branch else self.ctx.on_step_start
        while True:
            run.attempt += 1
            if on_start is not None:
                on_start(index, name, run.attempt)
            nc = NodeContext(
                name=name,
                node=plan.node,
                state=state,
                spec=self.spec,
                run=self.ctx,
                cancel=cancel,
                attempt=run.attempt,
                visit=visit,
                occurrence_id=f"{name}@{visit + 1}",
                in_branch=in_branch,
                runner=self,
            )
            try:
                outcome = self._attempt(plan, nc)
                if outcome.suspension is not None:
                    run.suspension = outcome.suspension
                    run.events.extend(nc.events)
                    return run
                update_bytes = checked_output(name, outcome.update)
                new_state = outcome.state
                if new_state is not None:
                    updates = outcome.updates or []
                else:
                    updates = [outcome.update]
                    # A branch's own state is only needed for its artifacts: the parallel
                    # merges every branch's updates itself.
                    if not in_branch or plan.artifacts:
                        new_state = apply_update(self.spec, state, outcome.update)
                if plan.artifacts:
                    nc.artifacts.extend(self._declared_artifacts(plan, new_state or state))
            except RunCancelled:
                raise
            except Exception as exc:
                error = exc if isinstance(exc, NodeError) else _wrap(exc)
                run.usage.add(nc.usage)  # a failed call may still have been billed
                run.events.extend(nc.events)
                if cancel.cancelled:
                    # The failure was most likely the abort itself (a closed socket).
                    raise RunCancelled(cancel.reason or "cancelled") from None
                if not error.retryable or run.attempt >= plan.max_attempts:
                    run.error = error
                    return run
                delay = backoff_delay(run.attempt, plan.backoff, plan.max_backoff)
                run.events.append(
                    (
                        "step.retrying",
                        {
                            "node": name,
                            "attempt": run.attempt,
                            "next_attempt": run.attempt + 1,
                            "delay": delay,
                            "error": error.to_dict(),
                        },
                    )
                )
                if delay > 0 and cancel.wait(delay):
                    raise RunCancelled(cancel.reason or "cancelled") from None
                continue
            run.update = outcome.update
            run.update_bytes = update_bytes
            run.updates = updates
            run.state = new_state
            run.route = outcome.route
            if run.attempt == 1:
                run.usage, run.events = nc.usage, nc.events
            else:
                run.usage.add(nc.usage)
                run.events.extend(nc.events)
            run.artifacts = nc.artifacts
            return run

    def _attempt(self, plan: NodePlan, nc: NodeContext) -> Outcome:
        if plan.timeout is None:
            return plan.kind.run(nc)
        parent = nc.cancel
        nc.cancel = parent.child()
        try:
            return call_with_cancel(lambda: plan.kind.run(nc), nc.cancel, plan.timeout)
        except TimeoutError:
            nc.cancel.cancel("timeout")
            raise NodeError(
                "timeout", f"node {plan.name!r} did not finish within {plan.timeout}s"
            ) from None
        finally:
            nc.cancel.detach()

    def _declared_artifacts(self, plan: NodePlan, state: dict) -> list[ArtifactData]:
        variables = {"state": state, "run": self.ctx.metadata, "node": plan.name}
        artifacts = []
        for i, item in enumerate(plan.artifacts):
            data: Any
            if "json" in item:
                value = evaluate(
                    item["json"], variables, node=plan.name, key=f"artifacts[{i}].json"
                )
                data = artifact_bytes(value)
                content_type = item.get("content_type") or "application/json"
            else:
                key = f"artifacts[{i}].text"
                data = render_template(item["text"], variables, node=plan.name, key=key)
                data = data.encode("utf-8")
                content_type = item.get("content_type") or guess_content_type(item["name"], "")
            artifacts.append(ArtifactData(item["name"], content_type, data))
        return artifacts


def checked_output(node: str, update: dict) -> int:
    """The update's JSON size; a value the database cannot store (NaN, infinity, NUL) fails
    the node here, where retries and `on_error` edges still apply, not the step's commit."""
    try:
        return storable_size(update)
    except Unstorable as exc:
        where = f"`{exc.path}`" if exc.path else "its update"
        raise NodeError(
            "invalid_output",
            f"node {node!r} output {where} cannot be stored: {exc.reason}",
            details={"node": node, "path": exc.path},
        ) from None


def _wrap(exc: Exception) -> NodeError:
    return NodeError("node_error", f"{type(exc).__name__}: {exc}")
