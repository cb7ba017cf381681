from typing import Any

from django.core.management.base import BaseCommand, CommandError

from runs.checkpoints import compact_finished_runs, snapshot_every


class Command(BaseCommand):
    help = (
        "Rewrite finished runs' checkpoints to the compact layout: a full snapshot every N "
        "steps (RUNYARD_CHECKPOINT_SNAPSHOT_EVERY), deltas between, so no read replays N "
        "deltas or more. Redundant full snapshots (rows from before deltas existed, a "
        "resumed segment's or a failure's) become key-level patches. Drops no checkpoint and "
        "changes no state: each rewritten row is replayed and compared before it is saved."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--every", type=int, default=None, metavar="N")
        parser.add_argument("--limit", type=int, default=1000, metavar="RUNS")

    def handle(self, *args: Any, **options: Any) -> None:
        every = options["every"] or snapshot_every()
        if every < 1 or options["limit"] < 1:
            raise CommandError("--every and --limit must be 1 or more.")
        runs, rows = compact_finished_runs(every=every, limit=options["limit"])
        self.stdout.write(
            f"compacted {runs} run(s): {rows} checkpoint row(s) rewritten (N={every})"
        )
