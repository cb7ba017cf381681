import logging
import time
from typing import Any

from django.core.management.base import BaseCommand
from django.db import close_old_connections

from runs.dispatch import dispatch_once
from runs.reconcile import reconcile_once
from schedules.firing import fire_due_schedules

log = logging.getLogger("runs.scheduler")


class Command(BaseCommand):
    help = (
        "Dispatch queued runs fairly, fire due schedules and reconcile orphans on a short tick "
        "(runs forever)."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--dispatch-every", type=float, default=0.5)
        parser.add_argument("--reconcile-every", type=float, default=2.0)
        parser.add_argument("--crons-every", type=float, default=1.0)
        parser.add_argument("--once", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        found = reconcile_once()  # at start: runs orphaned while nothing was watching
        if found:
            log.info("reconciled %d run(s) at start", len(found))
        next_reconcile = next_crons = time.monotonic()
        while True:
            close_old_connections()
            # Schedules first: a run a schedule starts is dispatched in the same tick. Any
            # number of schedulers may run; each tick of a schedule fires once among them.
            if time.monotonic() >= next_crons:
                try:
                    fire_due_schedules()
                except Exception:  # noqa: BLE001 - keep ticking; dispatch must go on
                    log.exception("firing schedules failed")
                next_crons = time.monotonic() + options["crons_every"]
            try:
                dispatch_once()
                if time.monotonic() >= next_reconcile:
                    for f in reconcile_once():
                        log.info("reconciled %s: %s -> %s", f.run_id, f.problem, f.result)
                    next_reconcile = time.monotonic() + options["reconcile_every"]
            except Exception:  # noqa: BLE001 - keep ticking; each tick is independent
                log.exception("scheduler tick failed")
            if options["once"]:
                return
            time.sleep(options["dispatch_every"])
