"""The run detail page's steps, events and artifacts: read-only tables, one page each.

Each table is one LIMITed query (plus a COUNT for steps and artifacts), so the page costs the
same for a run with ten events and one with a million.
"""

from __future__ import annotations

import json
import math
from typing import Any

from django.core.paginator import Page, Paginator
from django.http import HttpRequest
from django.utils.html import format_html

from runs.models import Artifact, Event, Run, Step

STEPS_PER_PAGE = 50
EVENTS_PER_PAGE = 100
ARTIFACTS_PER_PAGE = 50
# A run's JSON (state, input) is shown up to this many characters; the API has the rest.
MAX_JSON_CHARS = 50_000
EVENT_DATA_CHARS = 300


def pretty_json(value: Any, limit: int = MAX_JSON_CHARS) -> str:
    text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    if len(text) > limit:
        text = text[:limit] + f"\n… ({len(text) - limit} more characters)"
    return format_html('<pre class="run-json">{}</pre>', text)


def _page_number(request: HttpRequest, name: str) -> int:
    try:
        return max(1, int(request.GET.get(name, 1)))
    except ValueError:
        return 1


def _page_url(request: HttpRequest, name: str, number: int, anchor: str) -> str:
    params = request.GET.copy()
    params[name] = str(number)
    return f"?{params.urlencode()}#{anchor}"


def _nav(
    request: HttpRequest, name: str, anchor: str, *, number: int, pages: int, total: int
) -> dict[str, Any]:
    return {
        "number": number,
        "pages": pages,
        "total": total,
        "first": _page_url(request, name, 1, anchor) if number > 1 else None,
        "previous": _page_url(request, name, number - 1, anchor) if number > 1 else None,
        "next": _page_url(request, name, number + 1, anchor) if number < pages else None,
        "last": _page_url(request, name, pages, anchor) if number < pages else None,
    }


def _page_nav(request: HttpRequest, page: Page, name: str, anchor: str) -> dict[str, Any]:
    paginator = page.paginator
    return _nav(
        request,
        name,
        anchor,
        number=page.number,
        pages=paginator.num_pages,
        total=paginator.count,
    )


def related_tables(request: HttpRequest, run: Run) -> dict[str, Any]:
    """Template context: the requested page of the run's steps, events and artifacts."""
    steps = Paginator(
        Step.objects.filter(run=run)
        .order_by("index")
        # Not `update`: a step's state update can be large and the table does not show it.
        .only(
            "id",
            "run_id",
            "index",
            "node",
            "status",
            "attempt",
            "started_at",
            "finished_at",
            "duration_ms",
            "usage",
            "error",
        ),
        STEPS_PER_PAGE,
    ).get_page(_page_number(request, "steps_page"))
    artifacts = Paginator(
        Artifact.objects.filter(run=run)
        .select_related("step")
        .only(
            "id",
            "run_id",
            "name",
            "content_type",
            "size",
            "sha256",
            "created_at",
            "step__index",
            "step__node",
        )
        .order_by("id"),
        ARTIFACTS_PER_PAGE,
    ).get_page(_page_number(request, "artifacts_page"))
    # `seq` is gap-free from 1, so a page is a range on the (run, seq) unique index: no COUNT
    # and no OFFSET, however many events the run has.
    event_pages = max(1, math.ceil(run.last_seq / EVENTS_PER_PAGE))
    event_page = min(_page_number(request, "events_page"), event_pages)
    first = (event_page - 1) * EVENTS_PER_PAGE
    events = [
        (event, json.dumps(event.data, ensure_ascii=False, default=str)[:EVENT_DATA_CHARS])
        for event in Event.objects.filter(run=run, seq__gt=first, seq__lte=first + EVENTS_PER_PAGE)
        .only("id", "seq", "type", "data", "created_at")
        .order_by("seq")
    ]
    return {
        "steps_page": steps,
        "steps_nav": _page_nav(request, steps, "steps_page", "steps"),
        "events": events,
        "events_nav": _nav(
            request,
            "events_page",
            "events",
            number=event_page,
            pages=event_pages,
            total=run.last_seq,
        ),
        "artifacts_page": artifacts,
        "artifacts_nav": _page_nav(request, artifacts, "artifacts_page", "artifacts"),
    }
