from django.apps import AppConfig


class RunsConfig(AppConfig):
    name = "runs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from runs import checks, hooks  # noqa: F401

        # Operator functions and hooks must be registered in every process (web validates
        # specs, workers run them) before the first spec is parsed.
        hooks.load_hook_modules()

        # Each qcluster worker registers its cluster's size (the default dispatch capacity).
        from django_q.signals import post_spawn

        from runs.workers import on_worker_spawned

        post_spawn.connect(on_worker_spawned, dispatch_uid="runyard-worker-heartbeat")
