"""Log lines written while a run executes name its tenant and run, in JSON and in text."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from observability.logs import JsonFormatter, RunContextFilter, run_context
from runs.engine import register_function
from runs.services import create_run
from runs.status import RunStatus

ROOT = Path(__file__).resolve().parents[2]
node_log = logging.getLogger("tests.observability.node")


@register_function("log_from_node", replace=True)
def log_from_node(state: dict, ctx: object) -> dict:
    node_log.info("node says hello from %s", threading.current_thread().name)
    return {"logged": True}


def logging_spec() -> dict:
    return {
        "name": "logs",
        "start": "inline",
        "nodes": {
            "inline": {"kind": "function", "function": "log_from_node"},
            # with a timeout the engine calls the function on a helper thread
            "threaded": {"kind": "function", "function": "log_from_node", "timeout": 5},
            "done": {"kind": "end"},
        },
        "edges": [{"from": "inline", "to": "threaded"}, {"from": "threaded", "to": "done"}],
    }


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """The root logger also writes to a buffer, as the console handler does with LOG_FORMAT=json."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RunContextFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield buffer
    finally:
        root.removeHandler(handler)


@pytest.mark.django_db(transaction=True)
def test_every_line_logged_while_a_run_executes_carries_its_ids(
    tenant, make_graph, queue, json_lines
) -> None:
    make_graph(tenant, logging_spec())
    run = create_run(tenant, graph="logs")
    logging.getLogger("tests.observability").info("before the run")
    queue.drain()
    logging.getLogger("tests.observability").info("after the run")
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, run.error

    records = [json.loads(line) for line in json_lines.getvalue().splitlines()]
    node_lines = [r for r in records if r["logger"] == node_log.name]
    assert len(node_lines) == 2
    threads = {r["message"].rsplit(" ", 1)[-1] for r in node_lines}
    assert len(threads) == 2  # one written on the segment's thread, one on a helper thread
    for r in node_lines:
        assert r["tenant"] == tenant.slug and r["run_id"] == run.public_id.hex
        assert r["level"] == "INFO" and r["time"].endswith("+00:00")
    outside = [r for r in records if r["message"] in ("before the run", "after the run")]
    assert len(outside) == 2 and all("tenant" not in r and "run_id" not in r for r in outside)


def test_the_text_format_prefixes_the_run() -> None:
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logging.Formatter("%(levelname)s %(run_context)s%(message)s"))
    handler.addFilter(RunContextFilter())
    logger = logging.getLogger("tests.observability.text")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        with run_context("acme", "abc123"):
            logger.warning("inside")
        logger.warning("outside")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    assert buffer.getvalue().splitlines() == [
        "WARNING [tenant=acme run=abc123] inside",
        "WARNING outside",
    ]


def test_json_lines_keep_tracebacks_on_one_line() -> None:
    formatter = JsonFormatter()
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        record = logging.LogRecord(
            "x", logging.ERROR, __file__, 1, "failed %s", ("here",), sys.exc_info()
        )
    RunContextFilter().filter(record)
    line = formatter.format(record)
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["message"] == "failed here" and "ValueError: bad" in parsed["exc_info"]


def test_log_format_json_configures_every_process_line_as_json(tmp_path: Path) -> None:
    """The shipped LOGGING with LOG_FORMAT=json: Django's own loggers and django-q2's too."""
    script = (
        "import django, logging; django.setup();"
        "from observability.logs import run_context;"
        "logging.getLogger('runs.x').warning('plain line');"
        "logging.getLogger('django.request').error('request line');"
        "logging.getLogger('django-q').info('queue line');"
        "ctx = run_context('acme', 'r1'); ctx.__enter__();"
        "logging.getLogger('runs.y').info('in a run')"
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PYTEST")},
        "LOG_FORMAT": "json",
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "RUNYARD_VAR_DIR": str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=60, check=True,
    )  # fmt: skip
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.strip()]
    assert [(r["logger"], r["message"]) for r in lines] == [
        ("runs.x", "plain line"),
        ("django.request", "request line"),
        ("django-q", "queue line"),
        ("runs.y", "in a run"),
    ]
    assert lines[-1]["tenant"] == "acme" and lines[-1]["run_id"] == "r1"
    assert "tenant" not in lines[0]


def test_an_unknown_log_format_is_refused(tmp_path: Path) -> None:
    env = {**os.environ, "LOG_FORMAT": "xml", "RUNYARD_VAR_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", "import config.settings"], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0 and "LOG_FORMAT: text or json" in done.stderr
