"""The Run admin: changelist, a read-only detail page with paginated steps, events and
artifacts, and the operator actions (through runs.admin.operations)."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.exceptions import PermissionDenied
from django.db.models import Q, QuerySet, TextField
from django.db.models.functions import Cast
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.http import urlencode
from django.utils.timesince import timesince

from runs.admin.detail import pretty_json, related_tables
from runs.admin.filters import GraphNameFilter, LeaseFilter
from runs.admin.forms import OperationForm
from runs.admin.operations import OPERATIONS, Operation, Outcome, apply_operation
from runs.admin.queue import queue_links, queued_tasks_url
from runs.checkpoints import current_state
from runs.models import Artifact, Run

# More than this many runs in one action is almost certainly a mis-click on "select all".
MAX_RUNS_PER_ACTION = 500

_HEX = re.compile(r"^[0-9a-f]{4,32}$")
_META_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


# --- the admin ---------------------------------------------------------------------------------


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = [
        "short_id",
        "tenant",
        "graph_version",
        "status_badge",
        "priority",
        "created_by",
        "step",
        "attempts",
        "age",
        "lease_holder",
        "lease_expiry",
    ]
    list_filter = [
        "status",
        "tenant",
        GraphNameFilter,
        ("created_at", admin.DateFieldListFilter),
        LeaseFilter,
    ]
    list_select_related = ["tenant", "graph"]
    list_per_page = 50
    # Counting every run for "N total" is a full scan on a big table; the filtered count is enough.
    show_full_result_count = False
    ordering = ["-created_at", "-id"]
    # Shown so the search box appears; get_search_results does the searching.
    search_fields = ["public_id"]
    search_help_text = (
        "A run id (whole, or its first characters), text found in the run's metadata, "
        "or key=value for a metadata key."
    )
    # Named `<operation>_runs`: the confirmation page posts the action back by that name.
    actions = [f"{name}_runs" for name in OPERATIONS]
    change_form_template = "admin/runs/run/change_form.html"
    change_list_template = "admin/runs/run/change_list.html"

    fieldsets = [
        (
            None,
            {
                "fields": [
                    "public_id",
                    "tenant",
                    "graph_link",
                    "thread",
                    "parent_link",
                    "created_by",
                    "priority",
                    "status_badge",
                    "error_pretty",
                    "waiting_pretty",
                    "wait_deadline",
                    "cancel_action",
                    "pause_requested",
                    "guidance_pending",
                ]
            },
        ),
        (
            "Lease and attempts",
            {
                "fields": [
                    "lease_owner",
                    "lease_expiry",
                    "heartbeat_at",
                    "epoch",
                    "dispatched_at",
                    "not_before",
                    "claims",
                    "recoveries",
                    "resurrections",
                    "holds_slot",
                    "holds_queue_slot",
                ]
            },
        ),
        ("Usage", {"fields": ["steps", "tokens_in", "tokens_out", "cost_usd", "warned_limits"]}),
        ("Time", {"fields": ["created_at", "started_at", "finished_at"]}),
        ("Queue and audit", {"fields": ["queue_tasks", "audit_trail"]}),
        (
            "Data",
            {
                "fields": [
                    "input_pretty",
                    "state_pretty",
                    "position_pretty",
                    "metadata_pretty",
                ],
                "classes": ["collapse"],
            },
        ),
    ]

    # Runs are written by services only: the detail page is read-only and nothing is added or
    # deleted here (prune_runs deletes). Operator actions need the "operate" permission below.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_operate_permission(self, request: HttpRequest) -> bool:
        user: Any = request.user
        return user.is_active and user.is_staff and user.has_perm("runs.change_run")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Run]:
        return super().get_queryset(request).select_related("tenant", "graph")

    # --- search ---

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Run], search_term: str
    ) -> tuple[QuerySet[Run], bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        query = Q()
        hex_id = term.lower().replace("-", "")
        if _HEX.match(hex_id):
            if len(hex_id) == 32:
                query |= Q(public_id=uuid.UUID(hex_id))
            else:
                # Hyphenated, so it matches PostgreSQL's uuid text as well as SQLite's hex.
                pieces = [hex_id[0:8], hex_id[8:12], hex_id[12:16], hex_id[16:20], hex_id[20:]]
                query |= Q(public_id__startswith="-".join(p for p in pieces if p))
        key, sep, value = term.partition("=")
        if sep and _META_KEY.match(key.strip()) and "__" not in key:
            query |= Q(**{f"metadata__{key.strip()}": value.strip()})
        # JSON text: SQLite keeps non-ASCII escaped (\u00e9), PostgreSQL does not; try both.
        escaped = json.dumps(term)[1:-1]
        queryset = queryset.annotate(metadata_text=Cast("metadata", TextField()))
        query |= Q(metadata_text__icontains=term)
        if escaped != term:
            query |= Q(metadata_text__icontains=escaped)
        return queryset.filter(query), False

    # --- columns ---

    @admin.display(description="run", ordering="public_id")
    def short_id(self, obj: Run) -> str:
        return str(obj.public_id)[:8]

    @admin.display(description="graph", ordering="graph__name")
    def graph_version(self, obj: Run) -> str:
        return f"{obj.graph.name}@{obj.graph.version}"

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: Run) -> str:
        return format_html(
            '<span class="run-status run-status-{}">{}</span>', obj.status, obj.status
        )

    @admin.display(description="step (steps)", ordering="steps")
    def step(self, obj: Run) -> str:
        node = (obj.position or {}).get("node") or "-"
        return f"{node} ({obj.steps})"

    @admin.display(description="attempts (claims/recoveries)", ordering="claims")
    def attempts(self, obj: Run) -> str:
        return f"{obj.claims}/{obj.recoveries}"

    @admin.display(description="age", ordering="created_at")
    def age(self, obj: Run) -> str:
        return timesince(obj.created_at, timezone.now())

    @admin.display(description="lease owner", ordering="lease_owner")
    def lease_holder(self, obj: Run) -> str:
        # host:pid:thread: wrapped at the colons rather than widening the table.
        return format_html("<code>{}</code>", obj.lease_owner.replace(":", ":\u200b") or "-")

    @admin.display(description="lease expiry", ordering="lease_expires_at")
    def lease_expiry(self, obj: Run) -> str:
        if obj.lease_expires_at is None:
            return "-"
        when = timezone.localtime(obj.lease_expires_at).strftime("%Y-%m-%d %H:%M:%S")
        if obj.lease_expires_at < timezone.now():
            return format_html('{} <strong class="run-expired">expired</strong>', when)
        return when

    # --- detail fields ---

    @admin.display(description="graph")
    def graph_link(self, obj: Run) -> str:
        url = reverse("admin:runs_graph_change", args=[obj.graph_id])
        return format_html(
            '<a href="{}">{}@{}</a> <small>{}</small>',
            url,
            obj.graph.name,
            obj.graph.version,
            obj.graph_hash[:12],
        )

    @admin.display(description="parent")
    def parent_link(self, obj: Run) -> str:
        if obj.parent_id is None:
            return "-"
        url = reverse("admin:runs_run_change", args=[obj.parent_id])
        return format_html('<a href="{}">parent run</a> (depth {})', url, obj.depth)

    @admin.display(description="error")
    def error_pretty(self, obj: Run) -> str:
        return pretty_json(obj.error) if obj.error else "-"

    @admin.display(description="waiting for")
    def waiting_pretty(self, obj: Run) -> str:
        return pretty_json(obj.waiting_for) if obj.waiting_for else "-"

    @admin.display(description="input")
    def input_pretty(self, obj: Run) -> str:
        return pretty_json(obj.input)

    @admin.display(description="state")
    def state_pretty(self, obj: Run) -> str:
        return pretty_json(current_state(obj))

    @admin.display(description="position")
    def position_pretty(self, obj: Run) -> str:
        return pretty_json(obj.position)

    @admin.display(description="metadata")
    def metadata_pretty(self, obj: Run) -> str:
        return pretty_json(obj.metadata)

    @admin.display(description="django-q tasks")
    def queue_tasks(self, obj: Run) -> str:
        links = queue_links(obj)
        return format_html(
            " · ".join(['<a href="{}">{}</a>'] * len(links)),
            *[part for url, label in links for part in (url, label)],
        )

    @admin.display(description="audit log")
    def audit_trail(self, obj: Run) -> str:
        url = (
            reverse("admin:tenants_auditlog_changelist")
            + "?"
            + urlencode({"target_id": str(obj.public_id)})
        )
        return format_html('<a href="{}">operator actions on this run</a>', url)

    # --- detail page: steps, events and artifacts as paginated tables ---

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Run | None = None,
    ) -> HttpResponse:
        if obj is not None:
            context.update(related_tables(request, obj))
            context["operations"] = [
                (op, reverse("admin:runs_run_operate", args=[obj.pk, op.name]), op.preview(obj))
                for op in OPERATIONS.values()
            ]
            context["can_operate"] = self.has_operate_permission(request)
        return super().render_change_form(request, context, add, change, form_url, obj)

    # --- extra URLs ---

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        return [
            path(
                "<path:object_id>/operate/<str:name>/",
                view(self.operate_view),
                name="runs_run_operate",
            ),
            path(
                "<path:object_id>/artifacts/<int:artifact_id>/download/",
                view(self.artifact_view),
                name="runs_run_artifact",
            ),
            path("<path:object_id>/queue/", view(self.queue_view), name="runs_run_queue"),
            *super().get_urls(),
        ]

    def _run_or_404(self, request: HttpRequest, object_id: str) -> Run:
        if not self.has_view_permission(request):
            raise PermissionDenied
        run = self.get_object(request, object_id)
        if run is None:
            raise Http404("No such run.")
        return run

    def artifact_view(self, request: HttpRequest, object_id: str, artifact_id: int) -> FileResponse:
        run = self._run_or_404(request, object_id)
        artifact = Artifact.objects.filter(run=run, pk=artifact_id).first()
        if artifact is None:
            raise Http404("No such artifact.")
        return FileResponse(
            artifact.file.open("rb"),
            as_attachment=True,
            filename=artifact.name,
            content_type=artifact.content_type,
        )

    def queue_view(self, request: HttpRequest, object_id: str) -> HttpResponseRedirect:
        run = self._run_or_404(request, object_id)
        url, count = queued_tasks_url(run)
        if url is None:
            raise Http404("The queue is not browsable here (the Redis broker is in use).")
        self.message_user(request, f"{count} queued django-q task(s) named run-{run.pk}.")
        return HttpResponseRedirect(url)

    # --- operator actions ---

    @admin.action(description="Cancel selected runs…", permissions=["operate"])
    def cancel_runs(self, request: HttpRequest, queryset: QuerySet[Run]) -> HttpResponse | None:
        return self._operate(request, queryset, OPERATIONS["cancel"])

    @admin.action(description="Force cancel selected runs…", permissions=["operate"])
    def force_cancel_runs(
        self, request: HttpRequest, queryset: QuerySet[Run]
    ) -> HttpResponse | None:
        return self._operate(request, queryset, OPERATIONS["force_cancel"])

    @admin.action(description="Resume selected runs…", permissions=["operate"])
    def resume_runs(self, request: HttpRequest, queryset: QuerySet[Run]) -> HttpResponse | None:
        return self._operate(request, queryset, OPERATIONS["resume"])

    @admin.action(description="Requeue selected runs…", permissions=["operate"])
    def requeue_runs(self, request: HttpRequest, queryset: QuerySet[Run]) -> HttpResponse | None:
        return self._operate(request, queryset, OPERATIONS["requeue"])

    @admin.action(description="Mark selected runs interrupted…", permissions=["operate"])
    def mark_interrupted_runs(
        self, request: HttpRequest, queryset: QuerySet[Run]
    ) -> HttpResponse | None:
        return self._operate(request, queryset, OPERATIONS["mark_interrupted"])

    def _operate(
        self, request: HttpRequest, queryset: QuerySet[Run], op: Operation
    ) -> HttpResponse | None:
        if "post" in request.POST:
            # The confirmation names its runs; the changelist's filters no longer matter (a run
            # that changed status since the list was shown is still the one confirmed).
            ids = [i for i in request.POST.getlist(ACTION_CHECKBOX_NAME) if i.isdigit()]
            runs = list(self._runs(ids))
            form = OperationForm(request.POST, asks_cancel_action=op.asks_cancel_action)
        else:
            runs = list(queryset.select_related("tenant", "graph")[: MAX_RUNS_PER_ACTION + 1])
            form = OperationForm(asks_cancel_action=op.asks_cancel_action)
        if len(runs) > MAX_RUNS_PER_ACTION:
            self.message_user(
                request,
                f"Select at most {MAX_RUNS_PER_ACTION} runs for one action; nothing was changed.",
                messages.ERROR,
            )
            return None
        if not runs:
            self.message_user(
                request, "None of the selected runs exist any more.", messages.WARNING
            )
            return None
        if form.is_bound and form.is_valid():
            self._apply(request, op, runs, form)
            return None
        return self._confirmation(request, op, runs, form, single=False)

    def operate_view(self, request: HttpRequest, object_id: str, name: str) -> HttpResponse:
        """One run's action from its detail page: the same confirmation, then back to it."""
        if not self.has_operate_permission(request):
            raise PermissionDenied
        op = OPERATIONS.get(name)
        if op is None:
            raise Http404("No such action.")
        run = self._run_or_404(request, object_id)
        if request.method == "POST":
            form = OperationForm(request.POST, asks_cancel_action=op.asks_cancel_action)
            if form.is_valid():
                self._apply(request, op, [run], form)
                return HttpResponseRedirect(reverse("admin:runs_run_change", args=[run.pk]))
        else:
            form = OperationForm(asks_cancel_action=op.asks_cancel_action)
        return self._confirmation(request, op, [run], form, single=True)

    def _runs(self, ids: list[str]) -> QuerySet[Run]:
        return (
            Run.objects.filter(pk__in=ids)
            .select_related("tenant", "graph")
            .order_by("-created_at", "-id")
        )

    def _apply(
        self, request: HttpRequest, op: Operation, runs: list[Run], form: OperationForm
    ) -> list[Outcome]:
        reason = form.cleaned_data["reason"]
        cancel_action = form.cleaned_data.get("cancel_action") or "interrupt"
        outcomes = [
            apply_operation(op, run, user=request.user, reason=reason, cancel_action=cancel_action)
            for run in runs
        ]
        counts = {
            r: sum(o.result == r for o in outcomes) for r in ("changed", "unchanged", "refused")
        }
        level = messages.SUCCESS if counts["changed"] else messages.WARNING
        self.message_user(
            request,
            f"{op.label}: {counts['changed']} changed, {counts['unchanged']} unchanged, "
            f"{counts['refused']} refused.",
            level,
        )
        levels = {
            "changed": messages.SUCCESS,
            "unchanged": messages.WARNING,
            "refused": messages.ERROR,
        }
        for outcome in outcomes:
            self.message_user(request, outcome.text, levels[outcome.result])
        return outcomes

    def _confirmation(
        self,
        request: HttpRequest,
        op: Operation,
        runs: list[Run],
        form: OperationForm,
        *,
        single: bool,
    ) -> TemplateResponse:
        rows = [(run, *op.preview(run)) for run in runs]
        context = {
            **self.admin_site.each_context(request),
            "title": f"{op.label}: confirm",
            "opts": self.opts,
            "operation": op,
            "rows": rows,
            "form": form,
            "single": single,
            "action_checkbox_name": ACTION_CHECKBOX_NAME,
            "action_name": f"{op.name}_runs",
            "applies": sum(result == "changed" for _, result, _ in rows),
            "back_url": reverse("admin:runs_run_change", args=[runs[0].pk])
            if single
            else request.get_full_path(),
        }
        return TemplateResponse(request, "admin/runs/run/operation_confirmation.html", context)
