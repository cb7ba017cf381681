"""Functions for the chaos test: each call is logged to a file, so re-executions can be counted."""

from __future__ import annotations

import os
import time
from typing import Any

from runs.engine import register_function


@register_function("chaos_step", replace=True)
def chaos_step(state: dict[str, Any], ctx: Any) -> dict[str, Any]:
    log = os.environ.get("CHAOS_LOG")
    if log:
        with open(log, "a") as f:
            f.write(f"{ctx.run.metadata.get('trial')} {ctx.name}\n")
    time.sleep(float(ctx.args.get("seconds", 0.05)))
    return {"total": state.get("total", 0) + int(ctx.args.get("add", 1)), "trail": [ctx.name]}
