"""/admin/runs/reconcile/: the reconciler's findings, dry run first, then resolve.

GET is the dry run: every orphan candidate with its evidence and the action the reconciler
would take. The form posts back, with CSRF, the runs to resolve as `run_id:epoch:action` as
they were shown; a run whose epoch or planned action has moved since is skipped rather than
resolved on evidence the operator never saw. Every attempted run gets an audit row.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import OuterRef, Subquery
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils.dateparse import parse_datetime

from runs.admin.forms import ReconcileForm
from runs.models import Run, Step
from runs.reconcile import Finding, candidates, reconcile_once
from tenants.services import record_audit

PROBLEMS = {
    "lease_expired": "lease expired",
    "never_claimed": "dispatched, never claimed",
    "deadline_passed": "wait past its deadline",
    "parent_ended": "child of a run that ended",
}


@dataclass
class Row:
    finding: Finding
    run: Run | None
    last_node: str

    @property
    def token(self) -> str:
        return f"{self.finding.run_id}:{self.finding.evidence.get('epoch')}:{self.finding.action}"

    def when(self, key: str) -> dt.datetime | None:
        value = self.finding.evidence.get(key)
        return parse_datetime(value) if value else None

    @property
    def problem_label(self) -> str:
        return PROBLEMS.get(self.finding.problem, self.finding.problem)

    @property
    def lease_expires_at(self) -> dt.datetime | None:
        return self.when("lease_expires_at")

    @property
    def heartbeat_at(self) -> dt.datetime | None:
        return self.when("heartbeat_at")

    @property
    def dispatched_at(self) -> dt.datetime | None:
        return self.when("dispatched_at")

    @property
    def wait_deadline(self) -> dt.datetime | None:
        return self.when("wait_deadline")


def _rows(findings: list[Finding]) -> list[Row]:
    """Findings with their run rows and last step's node, in two queries for all of them."""
    last_node = Subquery(
        Step.objects.filter(run=OuterRef("pk")).order_by("-index").values("node")[:1]
    )
    runs = {
        str(run.public_id): run
        for run in Run.objects.filter(public_id__in=[f.run_id for f in findings])
        .select_related("tenant", "graph")
        .annotate(last_node=last_node)
    }
    return [
        Row(f, runs.get(f.run_id), getattr(runs.get(f.run_id), "last_node", None) or "")
        for f in findings
    ]


def _parse_token(token: str) -> tuple[str, str, str] | None:
    parts = token.split(":")
    return (parts[0], parts[1], parts[2]) if len(parts) == 3 else None


def reconcile_view(request: HttpRequest) -> HttpResponse:
    user: Any = request.user
    if not user.has_perm("runs.view_run"):
        raise PermissionDenied
    context: dict[str, Any] = {
        **admin.site.each_context(request),
        "title": "Reconcile runs",
        "opts": Run._meta,
        "problems": PROBLEMS,
        "can_resolve": user.has_perm("runs.change_run"),
    }
    if request.method == "POST":
        if not context["can_resolve"]:
            raise PermissionDenied
        form = ReconcileForm(request.POST)
        if form.is_valid():
            context["results"] = _resolve(request, form.cleaned_data["reason"])
            context["form"] = ReconcileForm()
    else:
        form = ReconcileForm()
    context.setdefault("form", form)
    context["rows"] = _rows(reconcile_once(dry_run=True))
    return TemplateResponse(request, "admin/runs/reconcile.html", context)


def _resolve(request: HttpRequest, reason: str) -> list[dict[str, Any]]:
    # "Resolve all" means all the runs the operator was shown, not whatever is orphaned now.
    every = "resolve_all" in request.POST
    tokens = request.POST.getlist("listed" if every else "selected")
    wanted = [t for t in map(_parse_token, tokens) if t is not None]
    if not wanted:
        messages.warning(request, "Select the runs to resolve; nothing was changed.")
        return []
    current = {f.run_id: f for f in candidates()}
    go: set[str] = set()
    results: list[dict[str, Any]] = []
    for run_id, epoch, action in wanted:
        finding = current.get(run_id)
        if finding is None:
            results.append(
                {"run_id": run_id, "action": action, "result": "skipped: no longer orphaned"}
            )
        elif str(finding.evidence.get("epoch")) != epoch or finding.action != action:
            results.append(
                {
                    "run_id": run_id,
                    "action": action,
                    "result": "skipped: changed since the dry run "
                    f"(now: {finding.action} at epoch {finding.evidence.get('epoch')})",
                }
            )
        else:
            go.add(run_id)
    resolved = reconcile_once(only=go) if go else []
    done = {f.run_id for f in resolved}
    results += [
        {"run_id": f.run_id, "action": f.action, "result": f.result or "done", "finding": f}
        for f in resolved
    ]
    results += [
        {"run_id": run_id, "action": "", "result": "skipped: no longer orphaned"}
        for run_id in go - done
    ]
    runs = {
        str(r.public_id): r
        for r in Run.objects.filter(public_id__in=[r["run_id"] for r in results]).select_related(
            "tenant"
        )
    }
    for result in results:
        run = runs.get(result["run_id"])
        result["run"] = run
        finding = result.get("finding")
        record_audit(
            "run.reconcile",
            by=request.user,
            tenant=run.tenant if run else None,
            target=run,
            reason=reason,
            status_before=finding.evidence["status"] if finding else (run.status if run else ""),
            status_after=run.status if run else "",
            data={
                "via": "admin",
                "result": result["result"],
                "action": result["action"],
                **(
                    {"problem": finding.problem, "evidence": finding.evidence}
                    if finding
                    else {"run_id": result["run_id"]}
                ),
            },
        )
    ok = sum(not r["result"].startswith(("skipped", "error")) for r in results)
    messages.success(request, f"Resolved {ok} run(s); {len(results) - ok} skipped.")
    return results
