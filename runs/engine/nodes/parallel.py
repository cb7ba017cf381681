"""`parallel`: run branch nodes concurrently on the same state snapshot, merged in branch order.

Each branch runs in its own helper thread with its own retry/timeout and a child cancel
token. `on_error: "fail_fast"` (default) cancels the other branches at the first failure and
fails the node; `"collect"` waits for every branch and reports every failure. With `errors`
set to a state key, `collect` instead succeeds with the successful branches merged and
{branch: error} written to that key.

Two branches writing one key whose reducer is `replace` would lose a result silently, so the
node fails with `merge_conflict` (fatal: running it again conflicts again), naming each key and
the branches that wrote it, unless the node says `on_conflict: "last_wins"` (the branch listed
last wins). Reducers that combine (append, merge, add...) never conflict.

The step's `update` lists the touched keys with their merged values (as if `replace`); each
branch's own update is in its `branch.completed` event. Use the step's `state`: re-applying
a parallel's `update` through `append`-like reducers would double it.

`branch.*` events are also shown live (RunContext.on_live) as each branch starts and ends,
while the node still runs; the copies recorded with the step are stored when it commits.
"""

from __future__ import annotations

import collections
import queue
import threading
from typing import TYPE_CHECKING, Any

from .. import fields as f
from ..errors import NodeError, RunCancelled
from ..fields import Field, Table
from ..state import apply_update
from ..threads import spawn
from .base import NodeKind, Outcome, register_kind

if TYPE_CHECKING:
    from ..context import NodeContext
    from ..speccheck import SpecCheck

MODES = ("fail_fast", "collect")
CONFLICT_MODES = ("fail", "last_wins")
MAX_BRANCHES = 64
# Conflicts named in a merge_conflict error: a hostile spec may have branches writing
# thousands of keys, and the error is stored with the run.
MAX_CONFLICTS_SHOWN = 20


@register_kind
class ParallelNode(NodeKind):
    kind = "parallel"
    field_table = Table(
        (
            Field(
                "branches",
                f.array(f.node_ref(), min_items=1, max_items=MAX_BRANCHES, unique=True),
                required=True,
                doc="Nodes run concurrently on the same state; they take no edges.",
            ),
            Field("on_error", f.enum(*MODES), doc="Default `fail_fast`."),
            Field(
                "on_conflict",
                f.enum(*CONFLICT_MODES),
                doc="Branches writing one `replace` key: `fail` (default, `merge_conflict`) or "
                "`last_wins`.",
            ),
            Field(
                "errors",
                f.nullable(f.state_key()),
                doc="With `collect`: succeed and write {branch: error} here.",
            ),
        ),
        rules={
            "dependentSchemas": {
                "errors": {
                    "required": ["on_error"],
                    "properties": {"on_error": {"const": "collect"}},
                }
            }
        },
    )

    def validate(self, name: str, node: dict, check: SpecCheck) -> None:
        where = f"nodes.{name}"
        branches = node.get("branches")
        if not isinstance(branches, list) or not branches:
            check.add(where, "`branches` must be a non-empty list of node names")
        elif len(branches) > MAX_BRANCHES:
            check.add(where, f"at most {MAX_BRANCHES} branches")
        else:
            for i, branch in enumerate(branches):
                if branch == name:
                    check.add(where, "a parallel cannot be its own branch")
                elif check.node_ref(where, branch, f"branches[{i}]") and branches.index(branch) < i:
                    check.add(where, f"branch {branch!r} is listed twice")
        if node.get("on_error", "fail_fast") not in MODES:
            check.add(where, f"`on_error` must be one of {MODES}, got {node.get('on_error')!r}")
        if node.get("on_conflict", "fail") not in CONFLICT_MODES:
            check.add(
                where,
                f"`on_conflict` must be one of {CONFLICT_MODES}, got {node.get('on_conflict')!r}",
            )
        check.key(where, node, "errors", required=False)
        if "errors" in node and node.get("on_error") != "collect":
            check.add(where, "`errors` only applies with on_error: 'collect'")

    def children(self, node: dict) -> list[str]:
        branches = node.get("branches")
        return [b for b in branches if isinstance(b, str)] if isinstance(branches, list) else []

    def run(self, nc: NodeContext) -> Outcome:
        branches: list[str] = nc.node["branches"]
        fail_fast = nc.node.get("on_error", "fail_fast") == "fail_fast"
        tokens = [nc.cancel.child() for _ in branches]
        finished: queue.SimpleQueue[tuple[int, Any, BaseException | None]] = queue.SimpleQueue()
        # A parent cancel wakes the waiting loop below even while every branch is blocked.
        unregister = nc.cancel.on_cancel(lambda: finished.put((-1, None, None)))
        pending = collections.deque(range(len(branches)))
        lock = threading.Lock()
        stopped = threading.Event()

        def take() -> int | None:
            with lock:
                return pending.popleft() if pending and not stopped.is_set() else None

        def run_branch(i: int) -> None:
            result: Any = None
            error: BaseException | None = None
            try:
                result = nc.runner.execute(
                    branches[i], nc.state, nc.visit, tokens[i], in_branch=True
                )
            except BaseException as exc:  # reported to the waiting thread
                error = exc
            try:
                if not isinstance(error, RunCancelled):
                    # Shown from here as the branch ends, before the waiting thread hears of
                    # it (it may itself be busy in another branch); it records the same event
                    # with the step.
                    branch_error = self._branch_error(result, error)
                    nc.live(*self._branch_event(branches, i, result, branch_error))
            finally:
                finished.put((i, result, error))
                failed = (
                    not isinstance(error, RunCancelled)
                    if error is not None
                    else result.error is not None or result.suspension is not None
                )
                if failed and fail_fast:
                    # Cancel the siblings from here: the caller may itself be busy in a branch.
                    stopped.set()
                    for j, token in enumerate(tokens):
                        if j != i:
                            token.cancel("fail_fast")

        def work() -> None:
            helper_started = False
            while (i := take()) is not None:
                if not helper_started and pending:
                    # Each worker starts at most one more, on its first branch: blocking
                    # branches still all run at once (the chain reaches one worker per
                    # branch), while cheap ones finish on a few threads without a thread
                    # wake-up per branch.
                    helper_started = True
                    spawn(work)
                run_branch(i)

        for i, branch in enumerate(branches):
            nc.emit("branch.started", {"branch": branch, "index": i}, live=True)
        try:
            # The calling thread is a worker too, which spares thread hand-offs when the
            # branches are cheap.
            work()
            results: dict[int, Any] = {}
            failures: dict[int, NodeError] = {}
            while len(results) + len(failures) < len(branches):
                i, result, exc = finished.get()
                if i < 0:
                    raise RunCancelled(nc.cancel.reason or "cancelled")
                error = self._branch_error(result, exc)
                if result is not None:
                    nc.usage.add(result.usage)
                    nc.events.extend(result.events)
                nc.emit(*self._branch_event(branches, i, result, error))
                if error is None:
                    results[i] = result
                    nc.artifacts.extend(result.artifacts)
                    continue
                failures[i] = error
                if fail_fast:
                    for j in range(len(branches)):
                        if j not in results and j not in failures:
                            nc.emit(
                                "branch.failed",
                                {
                                    "branch": branches[j],
                                    "index": j,
                                    "error": {
                                        "code": "cancelled",
                                        "message": "cancelled by fail_fast",
                                    },
                                },
                                live=True,
                            )
                    raise NodeError(
                        "branch_failed",
                        f"branch {branches[i]!r} failed: {error.code}: {error.message}",
                        retryable=error.retryable,
                        fatal=error.fatal,
                        details={"branch": branches[i], "error": error.to_dict()},
                    )
        finally:
            unregister()
            for token in tokens:
                token.detach()
        return self._merge(nc, branches, results, failures)

    def _branch_event(
        self, branches: list[str], i: int, result: Any, error: NodeError | None
    ) -> tuple[str, dict]:
        if error is None:
            return "branch.completed", {
                "branch": branches[i],
                "index": i,
                "attempt": result.attempt,
                "update": result.update,
            }
        return "branch.failed", {"branch": branches[i], "index": i, "error": error.to_dict()}

    def _branch_error(self, result: Any, exc: BaseException | None) -> NodeError | None:
        if exc is not None:
            if isinstance(exc, RunCancelled):
                return NodeError("cancelled", f"branch cancelled: {exc.reason}", retryable=False)
            if isinstance(exc, NodeError):
                return exc
            return NodeError("node_error", f"{type(exc).__name__}: {exc}")
        if result.suspension is not None:
            return NodeError("branch_suspended", "a branch cannot wait for input", fatal=True)
        return result.error

    def _merge(
        self,
        nc: NodeContext,
        branches: list[str],
        results: dict[int, Any],
        failures: dict[int, NodeError],
    ) -> Outcome:
        errors_key = nc.node.get("errors")
        if failures and not errors_key:
            described = "; ".join(
                f"{branches[i]}: {failures[i].code}: {failures[i].message}"
                for i in sorted(failures)
            )
            raise NodeError(
                "branches_failed",
                f"{len(failures)} of {len(branches)} branches failed: {described}",
                retryable=any(e.retryable for e in failures.values()),
                fatal=all(e.fatal for e in failures.values()),
                details={
                    "failures": {branches[i]: failures[i].to_dict() for i in sorted(failures)}
                },
            )
        if nc.node.get("on_conflict", "fail") != "last_wins":
            self._check_conflicts(nc, branches, results)
        updates: list[dict] = [u for i in sorted(results) for u in results[i].updates]
        if errors_key:
            updates.append(
                {errors_key: {branches[i]: failures[i].to_dict() for i in sorted(failures)}}
            )
        state = nc.state
        touched: dict[str, None] = {}
        for update in updates:
            state = apply_update(nc.spec, state, update)
            touched.update(dict.fromkeys(update))
        return Outcome({key: state[key] for key in touched}, state=state, updates=updates)

    def _check_conflicts(
        self, nc: NodeContext, branches: list[str], results: dict[int, Any]
    ) -> None:
        """Fail with `merge_conflict` when two branches wrote one `replace` key."""
        reducers = nc.spec.reducers
        writers: dict[str, list[str]] = {}
        for i in sorted(results):
            keys = {key for update in results[i].updates for key in update}
            for key in keys:
                if reducers.get(key, "replace") == "replace":
                    writers.setdefault(key, []).append(branches[i])
        clashes = sorted((key, names) for key, names in writers.items() if len(names) > 1)
        if not clashes:
            return
        # Keys come from node output (a function may return any key): shortened for the
        # stored error.
        shown = [
            {"key": key[:200], "branches": names} for key, names in clashes[:MAX_CONFLICTS_SHOWN]
        ]
        described = "; ".join(
            f"key {c['key']!r} written by branches {', '.join(map(repr, c['branches']))}"
            for c in shown
        )
        more = len(clashes) - len(shown)
        if more:
            described += f"; and {more} more keys"
        raise NodeError(
            "merge_conflict",
            f"parallel node {nc.name!r}: branches wrote the same key under the 'replace' "
            f"reducer ({described}); give the key a combining reducer, use distinct keys, or "
            "set on_conflict: 'last_wins'",
            retryable=False,
            fatal=True,
            details={"key": shown[0]["key"], "branches": shown[0]["branches"], "conflicts": shown},
        )
