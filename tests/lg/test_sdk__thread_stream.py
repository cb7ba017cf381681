"""`threads.join_stream` through the SDK: a thread's runs one after another, each opened by
its `metadata` and closed by `run_done`, an interrupt followed until the same run goes on,
`lifecycle` mode, resuming from an event id, and another tenant's thread a 404."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from langgraph_sdk import get_sync_client
from langgraph_sdk.errors import NotFoundError, UnprocessableEntityError
from langgraph_sdk.schema import StreamPart

from tenants.models import Tenant
from tests.e2e.processes import Platform
from tests.lg.conftest import key_for, lg_url

pytestmark = pytest.mark.e2e


def collect(parts: Iterator[StreamPart], runs_done: int) -> list[StreamPart]:
    """Parts up to the `runs_done`-th run_done; then the connection is closed."""
    got: list[StreamPart] = []
    for part in parts:
        got.append(part)
        if sum(p.event == "run_done" for p in got) == runs_done:
            break
    parts.close()  # type: ignore[attr-defined]
    return got


def soon(action: Callable[[], Any], delay: float = 1.0) -> threading.Timer:
    """Start runs once the stream has opened (the stream waits for the thread's next run)."""
    timer = threading.Timer(delay, action)
    timer.start()
    return timer


def test_thread_stream_follows_runs_interrupts_and_resumes(
    tenant: Tenant, other_tenant: Tenant, graphs: dict[str, Any], lg_platform: Platform
) -> None:
    key = key_for(tenant)
    client = get_sync_client(url=lg_url(lg_platform), api_key=key)
    tid = client.threads.create()["thread_id"]
    started: list[str] = []

    def two_runs() -> None:
        runner = get_sync_client(url=lg_url(lg_platform), api_key=key)
        first = runner.runs.create(tid, "chat", input={"question": "one"}, stream_mode="updates")
        second = runner.runs.create(
            tid, "chat", input={"question": "two"}, multitask_strategy="enqueue"
        )
        started.extend([first["run_id"], second["run_id"]])

    timer = soon(two_runs)
    parts = collect(client.threads.join_stream(tid), runs_done=2)
    timer.join()
    first, second = started
    names = [p.event for p in parts]
    assert names[0] == "metadata" and parts[0].data["run_id"] == first
    done_at = names.index("run_done")
    assert parts[done_at].data == {"run_id": first, "thread_id": tid, "status": "success"}
    # The first run streams in the mode it was started with, the second in the default.
    assert set(names[1:done_at]) == {"updates"}
    assert names[done_at + 1] == "metadata" and parts[done_at + 1].data["run_id"] == second
    assert names[-1] == "run_done" and parts[-1].data["run_id"] == second
    assert "values" in names[done_at + 2 : -1]
    assert "end" not in names
    assert all(p.id and p.id.startswith(f"{first}:") for p in parts[: done_at + 1])
    assert all(p.id and p.id.startswith(f"{second}:") for p in parts[done_at + 1 :])

    # From an event id: the rest of that run, its run_done, then the next run.
    middle = parts[2]
    resumed = collect(client.threads.join_stream(tid, last_event_id=middle.id), runs_done=2)
    assert [p.id for p in resumed[: done_at - 2]] == [p.id for p in parts[3 : done_at + 1]]
    assert [p.event for p in resumed].count("run_done") == 2
    assert resumed[-1].data["run_id"] == second

    # An interrupt: the run is followed until it is answered and ends; lifecycle mode has
    # only the run's opening and closing.
    def review() -> None:
        runner = get_sync_client(url=lg_url(lg_platform), api_key=key)
        held = runner.runs.create(tid, "review", input={"item": "kite"})
        runner.runs.join(tid, held["run_id"])
        runner.runs.wait(tid, "review", command={"resume": "approve"})
        runner.runs.wait(tid, "review", command={"resume": "ada"})

    timer = soon(review)
    lifecycle = collect(client.threads.join_stream(tid, stream_mode="lifecycle"), runs_done=1)
    timer.join()
    assert [p.event for p in lifecycle] == ["metadata", "run_done"]
    assert lifecycle[1].data["status"] == "success"
    assert client.threads.get_state(tid)["values"]["reviewer"] == "ada"

    with pytest.raises(UnprocessableEntityError):
        next(iter(client.threads.join_stream(tid, stream_mode="state_update")))
    bob = get_sync_client(url=lg_url(lg_platform), api_key=key_for(other_tenant))
    with pytest.raises(NotFoundError):
        next(iter(bob.threads.join_stream(tid)))
