"""System checks for settings that silently break durability when wrong."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, register


@register()
def check_q_cluster(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    conf = getattr(settings, "Q_CLUSTER", {})
    timeout, retry = conf.get("timeout"), conf.get("retry")
    errors = []
    if timeout is None or retry is None or retry <= timeout:
        errors.append(
            Error(
                f"Q_CLUSTER['retry'] ({retry}) must be larger than "
                f"Q_CLUSTER['timeout'] ({timeout}).",
                hint="Otherwise the broker hands a still-running task to a second worker.",
                id="runs.E001",
            )
        )
    return errors
