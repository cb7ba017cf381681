import logging
import threading
import time
from typing import Any

from django.core.management.base import BaseCommand
from django.db import close_old_connections

from runs.dispatch import dispatch_once
from runs.reconcile import reconcile_once
from schedules.firing import fire_due_schedules
from webhooks.delivery import deliver_due_webhooks

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
        parser.add_argument("--webhooks-every", type=float, default=1.0)
        parser.add_argument("--once", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        found = reconcile_once()  # at start: runs orphaned while nothing was watching
        if found:
            log.info("reconciled %d run(s) at start", len(found))
        next_reconcile = next_crons = time.monotonic()
        if options["once"]:
            self._send_webhooks()
        else:
            # Its own thread: a slow receiver must not hold up dispatching runs.
            threading.Thread(
                target=self._webhook_loop,
                args=(options["webhooks_every"],),
                name="webhooks",
                daemon=True,
            ).start()
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

    def _send_webhooks(self) -> None:
        for outcome in deliver_due_webhooks():
            log.debug("webhook delivery: %s", outcome)

    def _webhook_loop(self, every: float) -> None:
        """Retries, and first attempts whose queue task was lost: one iteration per tick."""
        while True:
            close_old_connections()
            try:
                self._send_webhooks()
            except Exception:  # noqa: BLE001 - keep ticking; each tick is independent
                log.exception("webhook tick failed")
            time.sleep(every)
