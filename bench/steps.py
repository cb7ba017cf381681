"""Effectful step cost: `python bench/steps.py [--json] [--quick]`.

What one committed step costs, on the embedded default (SQLite, WAL, synchronous=FULL) and on
PostgreSQL, each in a child process of its own with a fresh database, measured side by side in
interleaved rounds (so load on a shared machine hits every row alike), medians reported:

- `function` step: a chain of 50 `function` nodes (each one key, one addition) executed by a
  real Segment; every step is committed in its own transaction before the next starts;
- `llm` step: the same chain of `llm` nodes (scripted provider, latency 0, priced model), which
  also writes the per-model usage ledger;
- `transform` chain, labelled batched: consecutive pure steps share one commit (see
  runs/services/steps.py), so this row is NOT a per-commit cost;
- the raw 1-row commit on the same database and settings (BEGIN, one INSERT, COMMIT);
- LangGraph per node on the same chain (StateGraph, `durability="sync"`) with SqliteSaver (on
  a connection given the same pragmas: WAL, synchronous=FULL) / PostgresSaver;
- LangGraph with an llm node (`langgraph_llm`): each node formats its prompt from the state
  and invokes LangChain's GenericFakeChatModel (a scripted reply with usage, no latency):
  like with like for the `llm` row, reported beside the stricter comparison with a plain node;
- `function` step with a big state (`big_state`): the same chain over a state holding 100 KB
  of text (a long message history, say), written by the first step, each later step changing
  one small key; beside it LangGraph on the same state (its checkpointer stores a channel's
  value again only when it changes).

Also counted: statements and commits per step (Django's query log over one run), and
`checkpoint_bytes_per_step`: checkpoint JSON stored per step over a 201-step `function` chain,
for a small state and a 1 MB one, compact (RUNYARD_CHECKPOINT_SNAPSHOT_EVERY, default 50) vs
every checkpoint full.
Targets (issue #17): effectful step <= 2x the raw commit; <= 0.5x LangGraph per node, for
`function` and `llm` steps alike.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
WORK = ROOT / "var" / "bench" / "steps"
PG_URL = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432")
PG_DB = os.environ.get("BENCH_PG_DB", "runyard_bench_steps")  # dropped and re-created
NODES = 50
BIG_STATE = 100_000  # bytes of text in the big-state rows' state
TARGETS = {"vs_raw_commit": 2.0, "vs_langgraph": 0.5}
WRITES = {"INSERT", "UPDATE", "DELETE", "WITH"}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def chain(name: str, node: dict[str, Any], n: int = NODES) -> dict[str, Any]:
    names = [f"n{i}" for i in range(n)]
    order = [*names, "done"]
    return {
        "name": name,
        "start": "n0",
        "state": {"x": {"default": 0}},
        "nodes": {**{k: dict(node) for k in names}, "done": {"kind": "end"}},
        "max_steps": n + 10,
        "edges": [{"from": a, "to": b} for a, b in zip(order, order[1:], strict=False)],
    }


KINDS = {
    "function": {"kind": "function", "function": "bench_inc"},
    "llm": {
        "kind": "llm",
        "provider": "scripted",
        "model": "bench-model",
        "prompt": "Count: {{ state.x }}",
        "responses": ["ok"],
        "output": "answer",
        "price": {"input": 1.0, "output": 2.0},
    },
    "transform": {"kind": "transform", "set": {"x": "state.x + 1"}},
}


# --- child: one database ----------------------------------------------------------------------


def setup(db: str) -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    os.environ["RUNYARD_FUNCTION_MODULES"] = "bench.functions"
    os.environ.pop("REDIS_URL", None)
    os.environ["MEDIA_ROOT"] = str(WORK / db / "media")
    if db == "sqlite":
        os.environ.pop("DATABASE_URL", None)
        os.environ["SQLITE_PATH"] = str(WORK / db / "db.sqlite3")
    else:
        os.environ["DATABASE_URL"] = f"{PG_URL}/{PG_DB}"
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


class Runyard:
    """Runs of one chain, each executed by a Segment in this process (no queue)."""

    def __init__(self, kind: str, state_bytes: int = 0) -> None:
        from runs import dispatch
        from runs.services import create_graph_version
        from tenants.models import Tenant

        dispatch.enqueue_run = lambda pk: None  # this process executes the runs itself
        self.tenant = Tenant.objects.create(
            slug=f"{kind}-{uuid.uuid4().hex[:6]}",
            name=kind,
            max_concurrent_runs=1000,
            max_queued_runs=1_000_000,
            runs_per_minute=None,
            max_steps=None,
            max_wall_seconds=None,
        )
        self.graph = f"bench-{kind}-{state_bytes}"
        if state_bytes:
            spec = chain(self.graph, {"kind": "function", "function": "bench_text"})
            spec["state"] |= {"size": {"default": 0}, "text": {"default": ""}}
        else:
            spec = chain(self.graph, KINDS[kind])
        create_graph_version(self.tenant, spec)
        self.input = {"size": state_bytes} if state_bytes else {}

    def per_step(self) -> float:
        from runs.services import claim_run, create_run
        from runs.services.execute import Segment

        run = claim_run(create_run(self.tenant, graph=self.graph, input=self.input).pk)
        t0 = time.perf_counter()
        outcome = Segment(run).execute()
        elapsed = time.perf_counter() - t0
        assert outcome == "succeeded", outcome
        return elapsed / (NODES + 1)

    def statements(self) -> dict[str, float]:
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        from runs.services import claim_run, create_run
        from runs.services.execute import Segment

        run = claim_run(create_run(self.tenant, graph=self.graph).pk)
        # A write sent outside a transaction commits by itself (PostgreSQL's one-statement
        # step commit, runs/guarded_writes.py): it counts as a commit too.
        autocommitted = []

        def in_transaction() -> bool:
            if connection.in_atomic_block:
                return True
            raw = connection.connection
            if connection.vendor == "sqlite":
                return bool(raw.in_transaction)  # a BEGIN sent directly
            return bool(raw.info.transaction_status != raw.info.transaction_status.IDLE)

        def outside_transactions(execute: Any, sql: str, *args: Any) -> Any:
            if sql.split(None, 1)[0].upper() in WRITES and not in_transaction():
                autocommitted.append(sql)
            return execute(sql, *args)

        with (
            CaptureQueriesContext(connection) as queries,
            connection.execute_wrapper(outside_transactions),
        ):
            Segment(run).execute()
        sql = [q["sql"].split(None, 1)[0].upper() for q in queries.captured_queries]
        commits = sum(1 for s in sql if s == "COMMIT") + len(autocommitted)
        steps = NODES + 1
        statements = [s for s in sql if s not in ("BEGIN", "COMMIT", "SAVEPOINT", "RELEASE")]
        return {
            "statements_per_step": round(len(statements) / steps, 2),
            "commits_per_step": round(commits / steps, 2),
        }


class CheckpointBytes:
    """Checkpoint bytes stored per step (the JSON of each row's state or delta), for a chain
    of `function` steps over a state of `size` bytes, compact (the default setting) vs every
    checkpoint full (CHECKPOINT_SNAPSHOT_EVERY=1, what every row stored before deltas)."""

    STEPS = 200

    def __init__(self) -> None:
        from runs import dispatch
        from runs.services import create_graph_version
        from tenants.models import Tenant

        dispatch.enqueue_run = lambda pk: None
        self.tenant = Tenant.objects.create(
            slug=f"ckpt-{uuid.uuid4().hex[:6]}",
            name="checkpoints",
            max_concurrent_runs=1000,
            max_queued_runs=1_000_000,
            runs_per_minute=None,
            max_steps=None,
            max_wall_seconds=None,
        )
        spec = chain("bench-ckpt", {"kind": "function", "function": "bench_blob"}, self.STEPS)
        spec["state"] |= {"size": {"default": 0}, "blob": {"default": ""}}
        create_graph_version(self.tenant, spec)

    def per_step(self, size: int, every: int | None) -> float:
        from django.conf import settings

        from runs.models import Checkpoint
        from runs.services import claim_run, create_run
        from runs.services.execute import Segment

        saved = settings.RUNYARD
        if every is not None:
            settings.RUNYARD = {**saved, "CHECKPOINT_SNAPSHOT_EVERY": every}
        try:
            run = claim_run(create_run(self.tenant, graph="bench-ckpt", input={"size": size}).pk)
            assert Segment(run).execute() == "succeeded"
        finally:
            settings.RUNYARD = saved
        rows = Checkpoint.stored.filter(run=run).values_list("state", "updates")
        stored = sum(len(json.dumps(s if s is not None else u)) for s, u in rows)
        return stored / (self.STEPS + 1)

    def report(self) -> dict[str, Any]:
        out: dict[str, Any] = {"steps": self.STEPS + 1}
        for label, size in (("small_state", 0), ("state_1mb", 1_000_000)):
            full, compact = self.per_step(size, 1), self.per_step(size, None)
            out[label] = {
                "full": round(full),
                "compact": round(compact),
                "compact_vs_full": round(compact / full, 4),
            }
        return out


class RawCommit:
    """BEGIN; one 200-byte INSERT; COMMIT, on the same database with the same settings."""

    def __init__(self, db: str) -> None:
        self.db = db
        if db == "sqlite":
            from django.conf import settings

            path = WORK / db / "raw.sqlite3"
            path.unlink(missing_ok=True)
            self.conn: Any = sqlite3.connect(path, isolation_level=None)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute(f"PRAGMA synchronous={settings.SQLITE_SYNCHRONOUS}")
            self.conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        else:
            import psycopg

            self.conn = psycopg.connect(f"{PG_URL}/{PG_DB}")
            self.conn.execute("CREATE TABLE IF NOT EXISTS raw_t (id bigserial PRIMARY KEY, v text)")
            self.conn.commit()

    def per_commit(self, count: int) -> float:
        payload = "x" * 200
        t0 = time.perf_counter()
        if self.db == "sqlite":
            for _ in range(count):
                self.conn.execute("BEGIN IMMEDIATE")
                self.conn.execute("INSERT INTO t (v) VALUES (?)", (payload,))
                self.conn.execute("COMMIT")
        else:
            for _ in range(count):
                self.conn.execute("INSERT INTO raw_t (v) VALUES (%s)", (payload,))
                self.conn.commit()
        return (time.perf_counter() - t0) / count


class LangGraph:
    """The same chain in LangGraph, checkpointed after every node (durability="sync").

    With `llm`, each node is what an `llm` node is in LangGraph: the prompt formatted from
    the state, LangChain's GenericFakeChatModel invoked (a scripted reply with its usage, no
    latency), its text written to the state: like with like for the `llm` row."""

    def __init__(self, db: str, state_bytes: int = 0, *, llm: bool = False) -> None:
        import itertools
        from typing import TypedDict

        from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
        from langchain_core.messages import AIMessage, HumanMessage
        from langgraph.graph import END, START, StateGraph

        from bench.functions import words

        class State(TypedDict, total=False):
            x: int
            text: str
            answer: str

        usage = {"input_tokens": 3, "output_tokens": 1, "total_tokens": 4}
        model = GenericFakeChatModel(
            messages=itertools.repeat(AIMessage(content="ok", usage_metadata=usage))
        )

        def step(state: State) -> dict[str, Any]:
            update: dict[str, Any] = {"x": state["x"] + 1}
            if llm:
                reply = model.invoke([HumanMessage(f"Count: {state['x']}")])
                update["answer"] = reply.content
            if len(state.get("text") or "") < state_bytes:
                update["text"] = words(state_bytes)
            return update

        builder = StateGraph(State)
        names = [f"n{i}" for i in range(NODES)]
        for name in names:
            builder.add_node(name, step)
        builder.add_edge(START, names[0])
        for a, b in zip(names, names[1:], strict=False):
            builder.add_edge(a, b)
        builder.add_edge(names[-1], END)
        if db == "sqlite":
            from django.conf import settings
            from langgraph.checkpoint.sqlite import SqliteSaver

            path = WORK / db / f"langgraph-{state_bytes}{'-llm' if llm else ''}.sqlite3"
            path.unlink(missing_ok=True)
            conn = sqlite3.connect(path, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={settings.SQLITE_SYNCHRONOUS}")
            saver: Any = SqliteSaver(conn)
        else:
            from langgraph.checkpoint.postgres import PostgresSaver
            from psycopg import Connection
            from psycopg.rows import dict_row

            conn = Connection.connect(
                f"{PG_URL}/{PG_DB}", autocommit=True, prepare_threshold=0, row_factory=dict_row
            )
            saver = PostgresSaver(conn)
            saver.setup()
        self.conn = conn
        self.graph = builder.compile(checkpointer=saver)

    def per_node(self) -> float:
        config = {"configurable": {"thread_id": uuid.uuid4().hex}}
        t0 = time.perf_counter()
        out = self.graph.invoke({"x": 0}, config, durability="sync")
        elapsed = time.perf_counter() - t0
        assert out["x"] == NODES
        return elapsed / NODES


def us(seconds: float) -> float:
    return round(seconds * 1e6, 1)


def child(db: str, quick: bool) -> dict[str, Any]:
    setup(db)
    rounds = 5 if quick else 12
    runyard = {kind: Runyard(kind) for kind in KINDS}
    raw = RawCommit(db)
    try:
        lg: LangGraph | None = LangGraph(db)
    except ImportError as exc:
        log(f"langgraph not installed ({exc}): pip install -e '.[bench]'")
        lg = None
    samples: dict[str, list[float]] = {k: [] for k in [*KINDS, "raw_commit", "langgraph"]}
    big = Runyard("function", BIG_STATE)
    lg_big = LangGraph(db, BIG_STATE) if lg else None
    lg_llm = LangGraph(db, llm=True) if lg else None
    samples |= {"big_state": [], "langgraph_big_state": [], "langgraph_llm": []}
    for kind in KINDS:  # warm caches, compiled specs and connections before measuring
        runyard[kind].per_step()
    big.per_step()
    raw.per_commit(50)
    if lg and lg_big:
        lg.per_node()
        lg_big.per_node()
    if lg_llm:
        lg_llm.per_node()
    for _ in range(rounds):
        for kind in KINDS:
            samples[kind].append(runyard[kind].per_step())
        samples["raw_commit"].append(raw.per_commit(NODES))
        if lg:
            samples["langgraph"].append(lg.per_node())
        if lg_llm:
            samples["langgraph_llm"].append(lg_llm.per_node())
        samples["big_state"].append(big.per_step())
        if lg_big:
            samples["langgraph_big_state"].append(lg_big.per_node())
    med = {k: statistics.median(v) for k, v in samples.items() if v}
    report: dict[str, Any] = {
        "database": db,
        "rounds": rounds,
        "nodes": NODES,
        "us_median": {k: us(v) for k, v in med.items()},
        "us_samples": {k: [us(s) for s in v] for k, v in samples.items() if v},
        "per_step_sql": {kind: runyard[kind].statements() for kind in KINDS},
    }
    ratios: dict[str, float | None] = {}
    for kind in ("function", "llm"):
        ratios[f"{kind}_vs_raw_commit"] = round(med[kind] / med["raw_commit"], 2)
        ratios[f"{kind}_vs_langgraph"] = (
            round(med[kind] / med["langgraph"], 2) if "langgraph" in med else None
        )
    # Like with like: an llm node in LangGraph calls a chat model (the row above compares the
    # `llm` step with LangGraph's plain function node, the stricter target kept).
    ratios["llm_vs_langgraph_llm"] = (
        round(med["llm"] / med["langgraph_llm"], 2) if "langgraph_llm" in med else None
    )
    ratios["transform_batched_vs_raw_commit"] = round(med["transform"] / med["raw_commit"], 2)
    ratios["big_state_vs_function"] = round(med["big_state"] / med["function"], 2)
    ratios["big_state_vs_langgraph_big_state"] = (
        round(med["big_state"] / med["langgraph_big_state"], 2)
        if "langgraph_big_state" in med
        else None
    )
    report["ratios"] = ratios
    report["checkpoint_bytes_per_step"] = CheckpointBytes().report()
    report["targets"] = {
        f"{kind}_vs_raw_commit <= {TARGETS['vs_raw_commit']}": ratios[f"{kind}_vs_raw_commit"]
        <= TARGETS["vs_raw_commit"]
        for kind in ("function", "llm")
    } | {
        f"{kind}_vs_langgraph <= {TARGETS['vs_langgraph']}": (ratios[f"{kind}_vs_langgraph"] or 99)
        <= TARGETS["vs_langgraph"]
        for kind in ("function", "llm")
    }
    return report


# --- parent: both databases --------------------------------------------------------------------


def postgres_up() -> bool:
    import psycopg

    try:
        with psycopg.connect(f"{PG_URL}/postgres", connect_timeout=2):
            return True
    except psycopg.Error:
        return False


def fresh_postgres() -> None:
    import psycopg

    with psycopg.connect(f"{PG_URL}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {PG_DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {PG_DB}")


def run_child(db: str, quick: bool) -> dict[str, Any]:
    shutil.rmtree(WORK / db, ignore_errors=True)
    (WORK / db).mkdir(parents=True)
    if db == "postgresql":
        fresh_postgres()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env["RUNYARD_VAR_DIR"] = str(WORK / db)
    env["LOG_LEVEL"] = "WARNING"
    cmd = [sys.executable, __file__, "--child", db] + (["--quick"] if quick else [])
    log(f"steps: {db}")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        return {"error": proc.stderr[-3000:]}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else {"error": "no JSON from child"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child", choices=["sqlite", "postgresql"])
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.quick)))
        return
    report: dict[str, Any] = {"sqlite": run_child("sqlite", args.quick)}
    if postgres_up():
        report["postgresql"] = run_child("postgresql", args.quick)
    else:
        report["postgresql"] = {"skipped": f"no PostgreSQL at {PG_URL}"}
    print(json.dumps(report, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
