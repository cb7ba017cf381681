import datetime as dt
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from webhooks.prune import prune_deliveries, prune_orphan_run_webhooks


class Command(BaseCommand):
    help = (
        "Delete delivered and failed webhook deliveries (with their attempts) older than N "
        "days, and the webhooks of runs that no longer exist. Pending deliveries are kept."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--older-than", type=int, required=True, metavar="DAYS")

    def handle(self, *args: Any, **options: Any) -> None:
        days = options["older_than"]
        if days < 0:
            raise CommandError("--older-than must be 0 or more days.")
        cutoff = timezone.now() - dt.timedelta(days=days)
        count = prune_deliveries(finished_before=cutoff)
        orphans = prune_orphan_run_webhooks()
        self.stdout.write(
            f"deleted {count} delivery(ies) created before {cutoff.isoformat()} and "
            f"{orphans} webhook(s) of deleted runs"
        )
