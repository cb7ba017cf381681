"""`make bench`: run every benchmark side by side and write one JSON report.

Each suite is a standalone script printing JSON; this runs them one after another in fresh
processes (so one suite's warm caches never help another), gathers their reports into
`bench/report.json` with the date and machine, and prints the targets met and missed.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUITES = {
    "engine": ["bench/engine.py", "--json"],
    "steps": ["bench/steps.py", "--json"],
    "throughput": ["bench/throughput.py", "--json"],
    "runtime": ["bench/runtime.py", "--json"],
    "events": ["bench/events.py", "--json"],
    "tokens": ["bench/tokens.py", "--json"],
    "bigtable": ["bench/bigtable.py", "--json"],
}


def machine() -> dict[str, object]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "node": platform.node(),
    }


def parse_report(stdout: str) -> dict[str, object]:
    """A suite prints one JSON document, pretty or on one line (maybe after log lines)."""
    start = stdout.find("{")
    try:
        return json.loads(stdout[start:]) if start >= 0 else {"error": "no JSON on stdout"}
    except json.JSONDecodeError:
        lines = [line for line in stdout.splitlines() if line.startswith("{")]
        return json.loads(lines[-1]) if lines else {"error": "unparseable output"}


def main() -> int:
    quick = "--quick" in sys.argv
    only = [a for a in sys.argv[1:] if not a.startswith("-")]
    report: dict[str, object] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
    }
    failed = False
    for name, cmd in SUITES.items():
        if only and name not in only:
            continue
        if not (ROOT / cmd[0]).exists():
            report[name] = {"skipped": f"{cmd[0]} not found"}
            continue
        args = [sys.executable, *cmd] + (["--quick"] if quick else [])
        print(f"== {name}: {' '.join(cmd)}", file=sys.stderr, flush=True)
        proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            failed = True
            report[name] = {"error": proc.stderr[-3000:]}
            print(proc.stderr[-3000:], file=sys.stderr)
            continue
        report[name] = parse_report(proc.stdout)
    out = ROOT / "bench" / "report.json"
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    print(f"\nreport written to {out.relative_to(ROOT)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
