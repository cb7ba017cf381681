"""What the LangGraph Agent Protocol needs beyond Runyard's own rows.

Graph versions are assistants as they are (no row here). An assistant created through
`POST /lg/assistants` is a named configuration over a graph, versioned like LangGraph's:
every PATCH adds an AssistantVersion and makes it current. A run started through /lg keeps
the protocol's options it was started with (RunOptions), so `GET .../runs/{id}` and
`join_stream` answer with them; CronOptions does the same for schedules. StateUpdate rows
are the checkpoints that `POST /threads/{id}/state` and `/copy` write (Runyard's own
checkpoints belong to a run's step). StoreItem is the per-tenant key-value store of `/lg/store`.
"""

from __future__ import annotations

import uuid

from django.db import models

from runs.models import Run, Thread
from runs.querysets import TenantScopedQuerySet
from tenants.models import Tenant


class Assistant(models.Model):
    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="lg_assistants")
    graph_name = models.CharField(max_length=100)
    # The current version (one of its AssistantVersion rows); `/latest` moves it.
    version = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        indexes = [models.Index(fields=["tenant", "graph_name"], name="lg_assistant_graph")]

    def __str__(self) -> str:
        return f"assistant {self.public_id} over {self.graph_name}"


class AssistantVersion(models.Model):
    assistant = models.ForeignKey(Assistant, on_delete=models.CASCADE, related_name="versions")
    version = models.PositiveIntegerField()
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    # None: the graph's latest version at the time a run starts.
    graph_version = models.PositiveIntegerField(null=True, blank=True)
    config = models.JSONField(default=dict, blank=True)
    context = models.JSONField(default=dict, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["assistant", "version"], name="uniq_lg_assistant_version"
            )
        ]
        ordering = ["assistant", "-version"]

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"


class RunOptions(models.Model):
    """The protocol's view of a run started through /lg."""

    run = models.OneToOneField(Run, on_delete=models.CASCADE, related_name="lg_options")
    assistant_id = models.CharField(max_length=100)
    stream_mode = models.JSONField(default=list, blank=True)
    kwargs = models.JSONField(default=dict, blank=True)

    def __str__(self) -> str:
        return f"options of {self.run_id}"


class StateUpdate(models.Model):
    """A checkpoint written by `update_state` or `copy`: the thread's values at that point."""

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    thread = models.ForeignKey(Thread, on_delete=models.CASCADE, related_name="lg_updates")
    values = models.JSONField(default=dict, blank=True)
    as_node = models.CharField(max_length=100, blank=True)
    source = models.CharField(max_length=20, default="update")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["thread", "created_at", "id"]

    def __str__(self) -> str:
        return f"state update {self.public_id}"


class StoreItem(models.Model):
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="lg_store_items")
    # Labels joined by "." (the SDK refuses labels holding one).
    namespace = models.CharField(max_length=500)
    key = models.CharField(max_length=500)
    value = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "namespace", "key"], name="uniq_lg_store_item"
            )
        ]
        ordering = ["namespace", "key"]

    def __str__(self) -> str:
        return f"{self.namespace}/{self.key}"


class CronOptions(models.Model):
    """The protocol's view of a schedule made through /lg: the created assistant it runs (blank
    when it names a graph, whose version the schedule itself pins or follows) and the run
    options stored with it (config, context, stream options), returned in its `payload`."""

    cron = models.OneToOneField(
        "schedules.Cron", on_delete=models.CASCADE, primary_key=True, related_name="lg_options"
    )
    assistant_id = models.CharField(max_length=100, blank=True)
    payload = models.JSONField(default=dict, blank=True)

    def __str__(self) -> str:
        return f"options of cron {self.cron_id}"
