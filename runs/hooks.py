"""Operator hooks: `pre_run` may refuse a run, `post_run` sees every finished run.

Register with the decorators in a module listed in RUNYARD_HOOK_MODULES. A hook that raises
never corrupts a run: a failing pre_run refuses nothing (it is logged), post_run runs after
the final commit and its errors are logged.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from typing import Any

from django.conf import settings

log = logging.getLogger(__name__)

PreRun = Callable[[Any, dict[str, Any]], str | None]  # (tenant, request) -> refusal reason or None
PostRun = Callable[[Any], None]  # (run) -> None

pre_run_hooks: list[PreRun] = []
post_run_hooks: list[PostRun] = []
_loaded = False


def pre_run(fn: PreRun) -> PreRun:
    pre_run_hooks.append(fn)
    return fn


def post_run(fn: PostRun) -> PostRun:
    post_run_hooks.append(fn)
    return fn


def load_hook_modules() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    conf: dict[str, Any] = settings.RUNYARD
    modules: list[str] = [*conf["HOOK_MODULES"], *conf["FUNCTION_MODULES"]]
    for module in modules:
        importlib.import_module(module.strip())


def refusal_for(tenant: Any, request: dict[str, Any]) -> str | None:
    load_hook_modules()
    for hook in list(pre_run_hooks):
        try:
            reason = hook(tenant, request)
        except Exception:  # noqa: BLE001 - a broken hook must not block or corrupt runs
            log.exception("pre_run hook %r failed", hook)
            continue
        if reason:
            return str(reason)
    return None


def has_post_run_hooks() -> bool:
    load_hook_modules()
    return bool(post_run_hooks)


def notify_finished(run: Any) -> None:
    load_hook_modules()
    for hook in list(post_run_hooks):
        try:
            hook(run)
        except Exception:  # noqa: BLE001
            log.exception("post_run hook %r failed for run %s", hook, run.public_id)
