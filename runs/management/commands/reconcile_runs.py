import json
from typing import Any

from django.core.management.base import BaseCommand

from runs.reconcile import reconcile_once


class Command(BaseCommand):
    help = "Find orphaned runs (expired leases, lost dispatches, overdue waits) and resolve them."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--dry-run", action="store_true", help="List, change nothing.")
        parser.add_argument("--json", action="store_true", help="Print findings as JSON.")

    def handle(self, *args: Any, **options: Any) -> None:
        findings = reconcile_once(dry_run=options["dry_run"])
        if options["json"]:
            self.stdout.write(json.dumps([f.to_dict() for f in findings], indent=2))
            return
        verb = "would" if options["dry_run"] else "did"
        for f in findings:
            self.stdout.write(f"{f.run_id} {f.tenant} {f.problem}: {verb} {f.action} {f.result}")
        self.stdout.write(
            f"{len(findings)} run(s) {'found' if options['dry_run'] else 'resolved'}."
        )
