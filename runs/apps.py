from django.apps import AppConfig


class RunsConfig(AppConfig):
    name = "runs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from runs import checks, hooks  # noqa: F401

        # Operator functions and hooks must be registered in every process (web validates
        # specs, workers run them) before the first spec is parsed.
        hooks.load_hook_modules()
        configure_expressions()


def configure_expressions() -> None:
    """Hand the engine (which reads no settings) its per-value cap for expressions."""
    from django.conf import settings

    from runs.engine import bounds

    bounds.configure(max_value_bytes=settings.RUNYARD["MAX_VALUE_BYTES"])
