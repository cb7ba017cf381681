import datetime as dt
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from runs.models import Run
from runs.status import TERMINAL


class Command(BaseCommand):
    help = (
        "Delete finished runs (with their steps, events, checkpoints, artifacts) older than N days."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--older-than", type=int, required=True, metavar="DAYS")
        parser.add_argument("--dry-run", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        days = options["older_than"]
        if days < 0:
            raise CommandError("--older-than must be 0 or more days.")
        cutoff = timezone.now() - dt.timedelta(days=days)
        runs = Run.objects.filter(status__in=TERMINAL, finished_at__lt=cutoff, parent__isnull=True)
        count = runs.count()
        if not options["dry_run"]:
            for run in runs.iterator():
                for artifact in run.artifacts.all():
                    artifact.file.delete(save=False)
                for child in run.children.all():
                    for artifact in child.artifacts.all():
                        artifact.file.delete(save=False)
                run.delete()
        verb = "would delete" if options["dry_run"] else "deleted"
        self.stdout.write(f"{verb} {count} run(s) finished before {cutoff.isoformat()}")
