"""Compact checkpoints: deltas over a full snapshot every N steps, read back exactly as full
snapshots would have held them, by every reader (ORM, fork, API, /lg history, inspector)."""

from __future__ import annotations

import hashlib
import json
import random
import string
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client

from runs import checkpoints
from runs.engine import NodeContext, NodeError, register_function
from runs.engine.functions import registry
from runs.models import Checkpoint, Run
from runs.services import add_guidance, create_graph_version, create_run, create_thread
from runs.status import RunStatus
from tenants.models import Role, Tenant
from tests.lg.conftest import key_for
from tests.runs.conftest import InlineQueue, approval_spec, chain_spec
from tests.runs.test_api__helpers import key_client
from tests.runs.test_views__step_inspector import diff_entries, inspect, login

pytestmark = pytest.mark.django_db(transaction=True)

MB = 1_000_000
FAILS: list[int] = []


def digest(state: Any) -> str:
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()


@pytest.fixture(autouse=True)
def functions() -> Iterator[None]:
    @register_function("ckpt_tick", replace=True)
    def tick(state: dict, ctx: NodeContext) -> dict:
        update: dict[str, Any] = {"n": 1, "log": f"step {state.get('n', 0)}", "last": ctx.attempt}
        if not state.get("blob"):
            rng = random.Random(7)
            update["blob"] = "".join(rng.choices(string.ascii_letters, k=MB))
        return update

    @register_function("ckpt_flaky", replace=True)
    def flaky(state: dict, ctx: NodeContext) -> dict:
        if FAILS:
            FAILS.pop()
            raise NodeError("upstream_down", "the upstream is down", retryable=False)
        return {"ok": True}

    yield
    registry.unregister("ckpt_tick")
    registry.unregister("ckpt_flaky")
    FAILS.clear()


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> dict[tuple[int, int], str]:
    """Every state a step committed, as the engine held it (a digest), by (run pk, step)."""
    seen: dict[tuple[int, int], str] = {}
    real = checkpoints.row

    def row(chain: Any, run: Run, **kw: Any) -> Any:
        seen[(run.pk, kw["index"])] = digest(kw["state"])
        return real(chain, run, **kw)

    monkeypatch.setattr(checkpoints, "row", row)
    return seen


def loop_spec(name: str = "loop", steps: int = 200) -> dict[str, Any]:
    return {
        "name": name,
        "state": {
            "n": {"reducer": "add", "default": 0},
            "log": {"reducer": "append", "default": []},
            "blob": {"default": ""},
            "last": {"default": 0},
        },
        "start": "tick",
        "max_steps": steps + 10,
        "nodes": {"tick": {"kind": "function", "function": "ckpt_tick"}, "done": {"kind": "end"}},
        "edges": [
            {"from": "tick", "to": "tick", "when": f"state.n < {steps}"},
            {"from": "tick", "to": "done"},
        ],
    }


def stored_bytes(run: Run) -> int:
    rows = Checkpoint.stored.filter(run=run).values_list("state", "updates")
    return sum(len(json.dumps(s)) if s is not None else len(json.dumps(u)) for s, u in rows)


def assert_reads_back(run: Run, recorded: dict[tuple[int, int], str]) -> list[Checkpoint]:
    """Every checkpoint of `run` reads back as the state the engine had at that step: in one
    page (bulk), and one by one (`state_at` on a row as stored)."""
    cps = list(Checkpoint.objects.filter(run=run).order_by("step_index"))
    assert cps and cps[0].step_index == 0 and cps[0].base_step is None  # a run starts full
    for cp in cps:
        if cp.step_index:
            assert digest(cp.state) == recorded[(run.pk, cp.step_index)], cp.step_index
    for raw in Checkpoint.stored.filter(run=run).order_by("step_index"):
        assert digest(checkpoints.state_at(raw)) == digest(cps[raw.step_index].state)
    run.refresh_from_db()
    assert cps[-1].state == run.state
    return cps


def assert_bounded(run: Run, every: int) -> None:
    for step, base in Checkpoint.stored.filter(run=run).values_list("step_index", "base_step"):
        assert base is None or 0 < step - base < every, (step, base)


def test_a_200_step_run_over_1mb_stores_under_10_percent_of_full_snapshots(
    tenant: Tenant, queue: InlineQueue, recorded: dict[tuple[int, int], str]
) -> None:
    create_graph_version(tenant, loop_spec())
    run = create_run(tenant, graph="loop")
    assert queue.drain() == ["succeeded"]
    run.refresh_from_db()
    assert run.steps == 201 and run.state["n"] == 200
    state_size = len(json.dumps(run.state))
    assert state_size > MB
    full = 200 * state_size
    stored = stored_bytes(run)
    assert stored < full / 10, (stored, full)
    fulls = list(
        Checkpoint.stored.filter(run=run, base_step=None).values_list("step_index", flat=True)
    )
    assert fulls == [0, 50, 100, 150, 200]
    assert_bounded(run, 50)
    assert_reads_back(run, recorded)


def test_parallel_steps_replay_their_branch_updates_in_order(
    tenant: Tenant, queue: InlineQueue, recorded: dict[tuple[int, int], str], settings: Any
) -> None:
    settings.RUNYARD = {**settings.RUNYARD, "CHECKPOINT_SNAPSHOT_EVERY": 4}
    create_graph_version(
        tenant,
        {
            "name": "fan",
            "state": {"log": {"reducer": "append", "default": []}, "n": {"reducer": "add"}},
            "start": "fan",
            "max_steps": 40,
            "nodes": {
                "fan": {"kind": "parallel", "branches": ["left", "right"]},
                "left": {"kind": "transform", "set": {"log": "'left'", "n": "1"}},
                "right": {"kind": "transform", "set": {"log": "'right'", "n": "2"}},
                "done": {"kind": "end"},
            },
            "edges": [
                {"from": "fan", "to": "fan", "when": "state.n < 30"},
                {"from": "fan", "to": "done"},
            ],
        },
    )
    run = create_run(tenant, graph="fan")
    assert queue.drain() == ["succeeded"]
    cps = assert_reads_back(run, recorded)
    assert cps[-1].state["log"] == ["left", "right"] * 10 and cps[-1].state["n"] == 30
    assert Checkpoint.stored.filter(run=run, base_step__isnull=False).count() > 5
    assert_bounded(run, 4)


def test_a_run_resumed_in_many_segments_keeps_writing_deltas(
    tenant: Tenant, queue: InlineQueue, recorded: dict[tuple[int, int], str], settings: Any
) -> None:
    # Each step hands its turn back: every segment checks the last checkpoint once.
    settings.RUNYARD = {**settings.RUNYARD, "SEGMENT_SECONDS": 0, "CHECKPOINT_SNAPSHOT_EVERY": 5}
    spec = loop_spec(steps=12)
    spec["state"]["blob"] = {"default": "small"}  # function steps: each commits on its own
    create_graph_version(tenant, spec)
    run = create_run(tenant, graph="loop")
    outcomes = queue.drain()
    assert outcomes[-1] == "succeeded" and len(outcomes) > 10
    fulls = list(
        Checkpoint.stored.filter(run=run, base_step=None).values_list("step_index", flat=True)
    )
    assert fulls == [0, 5, 10]
    assert_reads_back(run, recorded)


def test_fork_from_a_delta_checkpoint_starts_from_its_state(
    tenant: Tenant, queue: InlineQueue, recorded: dict[tuple[int, int], str], settings: Any
) -> None:
    settings.RUNYARD = {**settings.RUNYARD, "CHECKPOINT_SNAPSHOT_EVERY": 10}
    create_graph_version(tenant, chain_spec(n=8))
    run = create_run(tenant, graph="chain")
    assert queue.drain() == ["succeeded"]
    middle = Checkpoint.stored.get(run=run, step_index=5)
    assert middle.base_step == 0 and middle.state is None and middle.updates == [{"count": 5}]
    api = key_client(tenant)
    response = api.post("/runs", {"graph": "chain", "from_checkpoint": str(middle.public_id)})
    assert response.status_code == 201, response.content
    fork = Run.objects.get(public_id=response.json()["id"])
    assert queue.drain() == ["succeeded"]
    fork.refresh_from_db()
    assert fork.state == {"count": 8}  # 5 from the checkpoint, then n5..n7
    first = Checkpoint.stored.get(run=fork, step_index=0)
    assert first.base_step is None and first.state == {"count": 5}  # a chain never crosses runs
    assert_reads_back(fork, recorded)


def test_thread_history_across_runs_reads_every_delta_back(
    tenant: Tenant, queue: InlineQueue, recorded: dict[tuple[int, int], str], settings: Any
) -> None:
    settings.RUNYARD = {**settings.RUNYARD, "CHECKPOINT_SNAPSHOT_EVERY": 3}
    create_graph_version(tenant, chain_spec(n=5))
    thread = create_thread(tenant)
    runs = []
    for _ in range(2):
        runs.append(create_run(tenant, graph="chain", thread_id=str(thread.public_id)))
        assert queue.drain() == ["succeeded"]
    expected = {
        str(cp.public_id): cp.state
        for run in runs
        for cp in assert_reads_back(run, recorded)  # count 0..5, then 5..10 on the thread
    }
    assert Checkpoint.stored.filter(thread=thread, state__isnull=True).count() >= 6
    # Runyard's API, page by page.
    api = key_client(tenant, Role.VIEWER)
    got: dict[str, Any] = {}
    cursor = None
    while True:
        url = f"/threads/{thread.public_id}/checkpoints?limit=4" + (
            f"&cursor={cursor}" if cursor else ""
        )
        body = api.get(url).json()
        got.update({item["id"]: item["state"] for item in body["items"]})
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert got == expected
    # The LangGraph protocol's history, newest first, and its state at one delta checkpoint.
    client, key = Client(), key_for(tenant)
    response = client.post(
        f"/lg/threads/{thread.public_id}/history",
        data={"limit": 50},
        content_type="application/json",
        HTTP_X_API_KEY=key,
    )
    assert response.status_code == 200, response.content
    history = {h["checkpoint"]["checkpoint_id"]: h["values"] for h in response.json()}
    assert history == expected
    some = Checkpoint.stored.filter(thread=thread, state__isnull=True).last()
    assert some is not None
    response = client.get(
        f"/lg/threads/{thread.public_id}/state/{some.public_id}", HTTP_X_API_KEY=key
    )
    assert response.json()["values"] == expected[str(some.public_id)]


def test_the_step_inspector_diffs_delta_checkpoints(
    tenant: Tenant, queue: InlineQueue, settings: Any, member: Any
) -> None:
    settings.RUNYARD = {**settings.RUNYARD, "CHECKPOINT_SNAPSHOT_EVERY": 10}
    create_graph_version(tenant, chain_spec(n=4))
    run = create_run(tenant, graph="chain")
    assert queue.drain() == ["succeeded"]
    assert Checkpoint.stored.get(run=run, step_index=3).state is None
    page = inspect(login(member), run, 3)
    entries = diff_entries(page)
    assert entries["count"][0] == "changed"
    assert "2" in entries["count"][1] and "3" in entries["count"][1]


def test_a_failed_then_resurrected_step_reads_back_and_resumes_exactly(
    tenant: Tenant, queue: InlineQueue, recorded: dict[tuple[int, int], str], settings: Any
) -> None:
    settings.RUNYARD = {**settings.RUNYARD, "RESURRECTION_COOLDOWN_SECONDS": 0}
    FAILS[:] = [1]
    spec = chain_spec(name="flaky", n=2, max_resurrections=2)
    spec["nodes"]["call"] = {"kind": "function", "function": "ckpt_flaky"}
    spec["edges"] = [
        {"from": "n0", "to": "call"},
        {"from": "call", "to": "n1"},
        {"from": "n1", "to": "done"},
    ]
    create_graph_version(tenant, spec)
    run = create_run(tenant, graph="flaky")
    queue.drain()
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED and run.resurrections == 1
    cps = assert_reads_back(run, recorded)
    failed = cps[2]
    assert failed.state == cps[1].state == {"count": 1}  # a failed step keeps the state
    assert cps[3].state == {"count": 1, "ok": True} and cps[-1].state["count"] == 2


def test_a_step_failed_on_max_state_bytes_is_stored_full_with_the_state_before_it(
    tenant: Tenant, queue: InlineQueue, recorded: dict[tuple[int, int], str]
) -> None:
    Tenant.objects.filter(pk=tenant.pk).update(max_state_bytes=20_000)
    spec = loop_spec("grow", steps=20)
    spec["nodes"]["tick"] = {"kind": "transform", "set": {"blob": "state.blob ~ state.blob"}}
    spec["state"]["blob"] = {"default": "ab"}
    spec["edges"][0]["when"] = "state.blob | length < 1000000"
    create_graph_version(tenant, spec)
    run = create_run(tenant, graph="grow")
    assert queue.drain() == ["failed"]
    run.refresh_from_db()
    assert run.error is not None and run.error["code"] == "limit_exceeded.max_state_bytes"
    last = Checkpoint.stored.filter(run=run).order_by("-step_index").first()
    assert last is not None and last.base_step is None  # its state is not before + update
    before = Checkpoint.objects.get(run=run, step_index=last.step_index - 1)
    assert last.state == before.state
    assert Checkpoint.stored.filter(run=run, base_step__isnull=False).exists()
    assert_reads_back(run, {**recorded, (run.pk, last.step_index): digest(last.state)})


def test_guidance_between_steps_makes_the_next_checkpoint_full(
    tenant: Tenant, queue: InlineQueue, recorded: dict[tuple[int, int], str]
) -> None:
    create_graph_version(tenant, approval_spec())
    run = create_run(tenant, graph="approve")
    queue.drain()
    run.refresh_from_db()
    assert run.status == RunStatus.WAITING
    add_guidance(run, "be brief")
    api = key_client(tenant)
    decided = api.post(f"/runs/{run.public_id}/approvals/gate@1", {"decision": "approve"})
    assert decided.status_code == 200, decided.content
    queue.drain()
    cps = assert_reads_back(run, recorded)
    gate = next(cp for cp in cps if cp.step_index == 2)
    assert gate.state["guidance"] == ["be brief"]
    assert Checkpoint.stored.get(run=run, step_index=2).base_step is None
    assert cps[-1].state == {"log": ["before", "after"], "guidance": ["be brief"]}


def test_compaction_rewrites_full_rows_and_long_chains_and_keeps_every_state(
    tenant: Tenant, queue: InlineQueue, settings: Any
) -> None:
    settings.RUNYARD = {**settings.RUNYARD, "CHECKPOINT_SNAPSHOT_EVERY": 1}  # all full
    create_graph_version(tenant, loop_spec("legacy", steps=30))
    legacy = create_run(tenant, graph="legacy")
    assert queue.drain() == ["succeeded"]
    assert not Checkpoint.stored.filter(run=legacy, base_step__isnull=False).exists()
    settings.RUNYARD = {**settings.RUNYARD, "CHECKPOINT_SNAPSHOT_EVERY": 20}
    create_graph_version(tenant, chain_spec(n=30, max_steps=40))
    chained = create_run(tenant, graph="chain")
    assert queue.drain() == ["succeeded"]
    before = {
        run.pk: [digest(cp.state) for cp in Checkpoint.objects.filter(run=run)]
        for run in (legacy, chained)
    }
    legacy_bytes = stored_bytes(legacy)
    waiting = create_run(tenant, graph="legacy")  # not finished: never touched
    call_command("compact_checkpoints", "--every", "8")
    for run in (legacy, chained):
        assert [digest(cp.state) for cp in Checkpoint.objects.filter(run=run)] == before[run.pk]
        assert_bounded(run, 8)
        fulls = Checkpoint.stored.filter(run=run, base_step=None).values_list("step_index")
        assert [s for (s,) in fulls] == [0, 8, 16, 24]
    assert stored_bytes(legacy) < legacy_bytes / 5
    assert not Checkpoint.stored.filter(run=waiting).exists()
    assert checkpoints.compact_finished_runs(every=8) == (0, 0)  # idempotent
