"""Links from a run to django-q2's own admin pages for the tasks that executed it.

runs.dispatch names every task of a run `run-<pk>`. Failed tasks keep the name in a column, so
their changelist filters on it (successful ones are not saved: the run is their record, see
runs.dispatch.enqueue_run); queued tasks (OrmQ, the ORM broker only) keep it inside the signed
payload, so they are found by decoding the queue.
"""

from __future__ import annotations

from django.contrib import admin
from django.urls import reverse
from django.utils.http import urlencode
from django_q.conf import Conf
from django_q.models import OrmQ

from runs.models import Run

# The ORM queue holds the tasks not yet taken by a worker: normally a handful. Decoding is
# bounded so a backlog cannot make the link slow.
MAX_QUEUE_SCAN = 2000


def task_name(run: Run) -> str:
    return f"run-{run.pk}"


def orm_queue_browsable() -> bool:
    # django-q2 also registers OrmQ while testing; with the Redis broker that table is unused.
    return bool(Conf.ORM) and admin.site.is_registered(OrmQ)


def queue_links(run: Run) -> list[tuple[str, str]]:
    name = urlencode({"name": task_name(run)})
    links = [(f"{reverse('admin:django_q_failure_changelist')}?{name}", "failed tasks")]
    if orm_queue_browsable():
        links.append((reverse("admin:runs_run_queue", args=[run.pk]), "queued tasks"))
    return links


def queued_tasks_url(run: Run) -> tuple[str | None, int]:
    """The OrmQ changelist filtered to this run's queued tasks, and how many there are."""
    if not orm_queue_browsable():
        return None, 0
    wanted = task_name(run)
    ids = [
        row.pk
        for row in OrmQ.objects.using(Conf.ORM or "default").order_by("id")[:MAX_QUEUE_SCAN]
        if row.name() == wanted
    ]
    # id__in=0 matches nothing: an empty, still filtered, list rather than the whole queue.
    query = urlencode({"id__in": ",".join(map(str, ids)) or "0"})
    return f"{reverse('admin:django_q_ormq_changelist')}?{query}", len(ids)
