import datetime as dt
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from runs.services.prune import old_roots, prune_runs
from triggers.models import ReceivedEvent
from triggers.services import prune_received_events


class Command(BaseCommand):
    help = (
        "Delete finished runs (with their steps, events, checkpoints, artifacts) older than N "
        "days, in short batches (RUNYARD_PRUNE_BATCH_RUNS / _ROWS) so live runs keep going; "
        "and events received (POST /events) before then."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--older-than", type=int, required=True, metavar="DAYS")
        parser.add_argument("--dry-run", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        days = options["older_than"]
        if days < 0:
            raise CommandError("--older-than must be 0 or more days.")
        cutoff = timezone.now() - dt.timedelta(days=days)
        if options["dry_run"]:
            count, verb = old_roots(cutoff).count(), "would delete"
            events = ReceivedEvent.objects.filter(received_at__lt=cutoff).count()
        else:
            count, verb = prune_runs(finished_before=cutoff), "deleted"
            events = prune_received_events(received_before=cutoff)
        self.stdout.write(f"{verb} {count} run(s) finished before {cutoff.isoformat()}")
        self.stdout.write(f"{verb} {events} received event(s) from before then")
