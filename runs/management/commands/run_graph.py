"""`manage.py run_graph PATH [--input JSON] [--json] [--auto-approve]`

Runs a graph in-process: no queue, no database writes. One progress line per step on stderr,
the final state as JSON on stdout (with --json, nothing else on stdout). Exit 0 on success,
1 when the run failed, 2 when the spec (or the input) is invalid. --auto-approve approves every
approval and answers every input with its schema's default (or null); without it an approval
or input fails the run (exit 1) since nobody is there to answer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, Any, cast

from django.core.management.base import BaseCommand, CommandError, CommandParser
from rich.console import Console
from rich.markup import escape

from runs.engine import Problem, RunCancelled, SpecError, StepResult
from runs.engine.local import LocalResult, LocalRunner, load_spec_file

EXIT_FAILED = 1
EXIT_INVALID = 2
_STATUS_STYLE = {"completed": "green", "failed": "red", "suspended": "yellow"}


class Command(BaseCommand):
    help = "Run a graph spec file in-process (no queue, no database) and print its final state."
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", help="graph spec file (JSON or YAML)")
        parser.add_argument("--input", default="{}", help="run input as JSON, or @file.json")
        parser.add_argument("--json", action="store_true", help="print only the final state JSON")
        parser.add_argument(
            "--auto-approve",
            action="store_true",
            help="approve every approval; answer every input with its schema default or null",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        # Rich writes partial lines; Django's OutputWrapper would append a newline to each.
        stream = cast(IO[str], getattr(self.stderr, "_out", self.stderr))
        err = Console(file=stream, highlight=False, soft_wrap=True)
        path = Path(options["path"])
        try:
            spec = load_spec_file(path)
        except SpecError as exc:
            self._problems(err, f"invalid graph spec {path}", exc.problems)
            raise CommandError(
                f"invalid graph spec: {len(exc.problems)} problem(s)", returncode=EXIT_INVALID
            ) from None
        data = self._input(err, options["input"])
        runner = LocalRunner(
            path.parent,
            auto_approve=options["auto_approve"],
            on_step=lambda step, depth: self._progress(err, step, depth),
        )
        err.print(f"[bold]{escape(spec.name)}[/] [dim]{spec.hash[:12]}[/]")
        try:
            result = runner.run(spec, data)
        except (KeyboardInterrupt, RunCancelled):
            runner.cancel.cancel("interrupted")
            raise CommandError("run cancelled", returncode=EXIT_FAILED) from None
        if result.status == "invalid_input":
            self._problems(err, "invalid input", result.problems)
            raise CommandError(
                f"invalid input: {len(result.problems)} problem(s)", returncode=EXIT_INVALID
            )
        self._finish(err, result, as_json=options["json"])

    def _input(self, err: Console, raw: str) -> dict:
        try:
            text = Path(raw[1:]).read_text() if raw.startswith("@") else raw
            data = json.loads(text)
        except (OSError, ValueError) as exc:
            raise CommandError(
                f"--input is not valid JSON: {exc}", returncode=EXIT_INVALID
            ) from None
        if not isinstance(data, dict):
            raise CommandError("--input must be a JSON object", returncode=EXIT_INVALID)
        return data

    def _progress(self, err: Console, step: StepResult, depth: int) -> None:
        style = _STATUS_STYLE.get(step.status, "white")
        usage = step.usage
        parts = [
            f"{'  ' * depth}{step.index:>3}",
            f"{escape(step.node):<18}",
            f"[{style}]{step.status:<9}[/]",
            f"{step.duration_ms:8.1f} ms",
        ]
        if step.attempt > 1:
            parts.append(f"attempt {step.attempt}")
        if usage.tokens_in or usage.tokens_out:
            parts.append(f"tokens {usage.tokens_in}→{usage.tokens_out} ${usage.cost_usd:.6f}")
        if step.artifacts:
            parts.append("artifacts " + ", ".join(escape(a.name) for a in step.artifacts))
        if step.error:
            parts.append(f"[red]{escape(step.error['code'])}: {escape(step.error['message'])}[/]")
        err.print(" ".join(parts))

    def _problems(self, err: Console, title: str, problems: list[Problem]) -> None:
        err.print(f"[red bold]{escape(title)}[/] ({len(problems)} problem(s)):")
        for problem in problems:
            err.print(f"  [bold]{escape(problem.where)}[/]: {escape(problem.message)}")

    def _finish(self, err: Console, result: LocalResult, *, as_json: bool) -> None:
        usage = result.usage
        summary = (
            f"{result.steps} steps, tokens {usage.tokens_in}→{usage.tokens_out}, "
            f"cost ${usage.cost_usd:.6f}, {len(result.artifacts)} artifact(s)"
        )
        state_json = json.dumps(result.state, indent=2, ensure_ascii=False, default=str)
        if not as_json:
            self.stdout.write(f"Run {result.status}: {summary}")
            for artifact in result.artifacts:
                size = len(artifact.data)
                self.stdout.write(
                    f"  artifact {artifact.name} ({artifact.content_type}, {size} bytes)"
                )
            self.stdout.write("Final state:")
        self.stdout.write(state_json)
        if result.status == "succeeded":
            err.print(f"[green bold]succeeded[/] {summary}")
            return
        error = result.error or {"code": "failed", "message": "run failed"}
        err.print(f"[red bold]failed[/] {escape(error['code'])}: {escape(error['message'])}")
        raise CommandError(
            f"run failed: {error['code']}: {error['message']}", returncode=EXIT_FAILED
        )
