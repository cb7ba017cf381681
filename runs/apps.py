from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed


class RunsConfig(AppConfig):
    name = "runs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from runs import checks, hooks  # noqa: F401

        # Operator functions and hooks must be registered in every process (web validates
        # specs, workers run them) before the first spec is parsed.
        hooks.load_hook_modules()
        # Likewise the operator's price table: validation refuses unpriced models against it.
        configure_llm_prices()
        configure_expressions()
        setting_changed.connect(_on_setting_changed)

        # Each qcluster worker registers its cluster's size (the default dispatch capacity).
        from django_q.signals import post_spawn

        from runs.workers import on_worker_spawned

        post_spawn.connect(on_worker_spawned, dispatch_uid="runyard-worker-heartbeat")

        # A stopping qcluster (SIGTERM, to its whole group or its main process) hands its runs
        # back at their next step boundary and exits (runs/draining.py).
        from runs import draining

        post_spawn.connect(draining.on_worker_spawned, dispatch_uid="runyard-worker-draining")
        draining.make_qcluster_group_safe()


def configure_llm_prices() -> None:
    from runs.engine.pricing import configure_prices

    try:
        configure_prices(settings.RUNYARD.get("LLM_PRICES"))
    except ValueError as exc:
        raise ImproperlyConfigured(f"RUNYARD_LLM_PRICES: {exc}") from None


def _on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting == "RUNYARD":  # tests override settings.RUNYARD whole
        configure_llm_prices()
        configure_expressions()


def configure_expressions() -> None:
    """Hand the engine (which reads no settings) its per-value cap for expressions."""
    from runs.engine import bounds

    bounds.configure(max_value_bytes=settings.RUNYARD["MAX_VALUE_BYTES"])
