"""Artifact files live exactly as long as their rows: a rolled-back step leaves none behind."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import OperationalError

from runs.events import Fenced
from runs.models import Artifact, Run
from runs.services import create_graph_version, create_run
from runs.services import execute as execute_module
from runs.services import steps as steps_module
from runs.status import RunStatus
from tenants.models import Tenant

pytestmark = pytest.mark.django_db(transaction=True)
EXAMPLES = Path(settings.BASE_DIR) / "examples" / "graphs"


@pytest.fixture
def media(settings: Any, tmp_path: Path) -> Path:
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


def files_in(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def pipeline_run(tenant: Tenant) -> Run:
    create_graph_version(tenant, json.loads((EXAMPLES / "document-pipeline.json").read_text()))
    return create_run(
        tenant, graph="document-pipeline", input={"title": "T", "document": "Words. " * 20}
    )


def test_a_step_fenced_after_writing_its_artifacts_leaves_no_file(
    tenant: Tenant, queue: Any, media: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = steps_module.append_events

    def fenced_at_artifacts(run: Run, events: list[Any], **kw: Any) -> Any:
        if any(kind == "artifact.created" for kind, _ in events):
            assert files_in(media)  # the files are written by now
            raise Fenced("lease lost")
        return real(run, events, **kw)

    monkeypatch.setattr(steps_module, "append_events", fenced_at_artifacts)
    run = pipeline_run(tenant)
    queue.drain()
    assert not Artifact.objects.filter(run=run).exists()
    assert files_in(media) == set()


def test_a_step_whose_commit_fails_leaves_no_file(
    tenant: Tenant, queue: Any, media: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = execute_module.record_step_usage

    def broken(run: Run, written: Any) -> None:
        if any(p.result.artifacts for p in written.steps):
            assert files_in(media)  # the files are written by now
            raise OperationalError("disk I/O error")
        real(run, written)

    monkeypatch.setattr(execute_module, "record_step_usage", broken)
    run = pipeline_run(tenant)
    queue.drain()
    assert Run.objects.get(pk=run.pk).status != RunStatus.SUCCEEDED
    assert not Artifact.objects.filter(run=run).exists()
    assert files_in(media) == set()


def test_a_retried_commit_keeps_exactly_the_files_of_its_rows(
    tenant: Tenant, queue: Any, media: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = execute_module.record_step_usage
    failures: list[int] = []

    def locked_once(run: Run, written: Any) -> None:
        if any(p.result.artifacts for p in written.steps) and not failures:
            failures.append(1)
            raise OperationalError("database is locked")
        real(run, written)

    monkeypatch.setattr(execute_module, "record_step_usage", locked_once)
    run = pipeline_run(tenant)
    assert queue.drain() == ["succeeded"]
    assert failures == [1]
    rows = {a.file.name for a in Artifact.objects.filter(run=run)}
    assert len(rows) == 2
    assert files_in(media) == rows


def test_store_artifacts_refuses_to_write_outside_the_guard(tenant: Tenant) -> None:
    from runs.engine import StepResult

    result = StepResult.__new__(StepResult)
    with pytest.raises(RuntimeError, match="artifact_files_kept_on_commit"):
        steps_module.store_artifacts(Run(tenant=tenant), None, result, {})  # type: ignore[arg-type]
