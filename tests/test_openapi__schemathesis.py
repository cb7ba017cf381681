"""Property-based tests of the whole API from its own OpenAPI document (schemathesis).

The document is loaded from /api/v1/openapi.json through the WSGI app in-process. Every
operation gets generated requests, valid and invalid, with a fixed seed (derandomized) and a
bounded number of examples, checked by EVERY check schemathesis has (server errors, status
codes, content types, headers, response bodies, negative data rejected, positive data
accepted, missing headers, unsupported methods, auth ignored, use after free...), plus one
of ours: a request the document calls valid may only be refused for a documented reason the
document cannot state (`DOMAIN_REFUSALS`: a graph's semantics, input against a graph's
`input_schema`, a cursor the API never issued), never for its shape.

Half of the generated ids are replaced by real ones, so operations reach their success paths,
and a stateful run follows the document's OpenAPI links (run -> steps, events, artifacts,
approvals, input, controls; thread -> checkpoints; graph -> versions; a created schedule or
webhook -> its reads, changes, deliveries and deletion) with the ids real responses return.

`RUNYARD_FUZZ_EXAMPLES` (per operation), `RUNYARD_FUZZ_SCENARIOS` and `RUNYARD_FUZZ_STEPS`
(stateful) raise the bounds; `make chaos` runs this file with larger ones.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import CHECKS as REGISTERED_CHECKS
from schemathesis.checks import load_all_checks
from schemathesis.config import PositiveDataAcceptanceConfig
from schemathesis.config._phases import InferenceConfig
from schemathesis.generation.meta import TestPhase

from config.wsgi import application
from runs import dispatch
from runs.api import live
from runs.models import Artifact, Checkpoint, Graph, Run, Thread
from runs.services import create_graph_version
from schedules.models import Cron
from tenants.models import Role, Tenant
from tenants.services import create_api_key
from tests.runs.conftest import InlineQueue, approval_spec, chain_spec
from tests.runs.test_api__helpers import key_client
from webhooks.models import Subscription
from webhooks.services import create_subscription

OPENAPI_URL = "/api/v1/openapi.json"
MAX_EXAMPLES = int(os.environ.get("RUNYARD_FUZZ_EXAMPLES", "10"))
STATEFUL_EXAMPLES = int(os.environ.get("RUNYARD_FUZZ_SCENARIOS", "30"))
STATEFUL_STEPS = int(os.environ.get("RUNYARD_FUZZ_STEPS", "20"))

# Why the API may refuse a request its document calls valid: rules no schema can state,
# each answered with its own error code (documented in the operation's description).
DOMAIN_REFUSALS: dict[int, set[str]] = {
    400: {"invalid_cursor", "invalid_json_value"},
    413: {"payload_too_large"},
    422: {
        "invalid_graph",
        "invalid_input",
        "invalid_json_value",
        "invalid_route",
        "invalid_filter",
        # crons: an expression croniter refuses or that never fires, a zone the zone database
        # lacks, an end before the first tick; runs, crons, webhooks: the HTTP allow-list.
        "invalid_schedule",
        "invalid_timezone",
        "end_time_before_first_tick",
        "webhook_refused",
    },
}

load_all_checks()


@schemathesis.check
def valid_requests_are_refused_only_for_documented_reasons(
    ctx: Any, response: Any, case: schemathesis.Case
) -> bool | None:
    """A positive (schema-valid) request answered 400/413/422 must carry a domain code: a
    generic `validation_error` there means the document is looser than the code."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return None
    allowed = DOMAIN_REFUSALS.get(response.status_code)
    if allowed is None:
        return None
    try:
        code = response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        code = None
    if code not in allowed:
        raise AssertionError(
            f"A request the document calls valid was refused with {response.status_code} "
            f"{code!r} (allowed for schema-valid requests: {sorted(allowed)}): "
            f"{response.text[:500]}"
        )
    return None


CHECKS: list[Any] = [REGISTERED_CHECKS.get_one(n) for n in REGISTERED_CHECKS.get_all_names()]

schema = schemathesis.openapi.from_wsgi(OPENAPI_URL, application)
schema.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], deterministic=True
)
# Stateful runs follow the document's own links only: links schemathesis infers (e.g. a run's
# `thread_id`, null on most runs) would test its guesses, not the document.
schema.config.phases.stateful.inference = InferenceConfig(algorithms=[])
# There, valid requests only: the sequences are for reaching every operation with real ids
# (invalid requests to each operation are the per-operation test's part).
schema.config.phases.stateful.generation.update(modes=[GenerationMode.POSITIVE])
# The builtin positive-data check takes the statuses of `DOMAIN_REFUSALS` too; our check
# above then requires their domain codes.
schema.config.checks.positive_data_acceptance = PositiveDataAcceptanceConfig(
    expected_statuses=["2xx", "401", "403", "404", "409", "429", *map(str, DOMAIN_REFUSALS)]
)

# Status codes seen per operation, to check that the run reached success paths as well.
STATUSES: dict[str, set[int]] = {}
STATEFUL_STATUSES: dict[str, set[int]] = {}

# Ids of real objects, filled per test by the `seeded` fixture and read by the hook below.
REAL: dict[str, str] = {}
WEBHOOK_URL = "http://127.0.0.1:9/hook"  # allowed for the seeded tenant; never called here


@schema.hook
def flatmap_case(
    context: schemathesis.HookContext, case: schemathesis.Case
) -> st.SearchStrategy[schemathesis.Case]:
    """Half the valid cases get real ids (random ones only find 404s), and half the valid
    `POST /runs` start a real graph. Invalid cases stay as generated: a real id written over
    the invalid part would make them valid."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return st.just(case)
    if meta.phase.name == TestPhase.STATEFUL:
        # There the document's links supply real ids. Half the run listings go unfiltered:
        # random filters nearly always match no run, and an empty page gives the list's
        # link to the first run (GetFirstRun) nothing to follow.
        if case.operation.path == "/api/v1/runs" and case.method.upper() == "GET":
            return st.booleans().map(lambda plain: _unfiltered(case) if plain else case)
        return st.just(case)
    real = {name: REAL[name] for name in (case.path_parameters or {}) if name in REAL}
    path, method = case.operation.path, case.method.upper()
    start = path == "/api/v1/runs" and method == "POST"
    # Random cron expressions and URLs are nearly all refused: half use real ones.
    cron = path.startswith("/api/v1/crons") and method in ("POST", "PATCH")
    hook = path.startswith("/api/v1/webhooks") and method in ("POST", "PATCH")
    if not real and not ((start or cron or hook) and isinstance(case.body, dict)):
        return st.just(case)

    def with_real(use: bool) -> schemathesis.Case:
        if use and real:
            case.path_parameters = {**case.path_parameters, **real}
        if use and isinstance(case.body, dict):
            skip = ("thread_id", "from_checkpoint", "webhook", "version", "input")
            body = {k: v for k, v in case.body.items() if k not in skip}
            if start:
                case.body = {**body, "graph": "chain", "version": 1}
            elif cron and method == "POST":
                case.body = {**body, "graph": "chain", "schedule": "*/5 * * * *", "timezone": "UTC"}
            elif cron:
                case.body = {"enabled": bool(case.body.get("enabled"))}
            elif hook and "url" in case.body:
                case.body = {**case.body, "url": WEBHOOK_URL}
        return case

    return st.booleans().map(with_real)


def _unfiltered(case: schemathesis.Case) -> schemathesis.Case:
    case.query = {}
    return case


def ask_spec() -> dict[str, Any]:
    """Waits for input, and requires `text` in its run input."""
    return {
        "name": "ask",
        "input_schema": {
            "type": "object",
            "required": ["text"],
            "properties": {"text": {"type": "string"}},
        },
        "start": "ask",
        "nodes": {
            "ask": {"kind": "input", "prompt": "More?", "output": "answer"},
            "done": {"kind": "end"},
        },
        "edges": [{"from": "ask", "to": "done"}],
    }


def approve_then_ask_spec() -> dict[str, Any]:
    """An approval, then an input request: the links from a started run reach both, and an
    artifact for the links from its artifacts to their content."""
    spec = approval_spec()
    spec["nodes"]["before"]["artifacts"] = [{"name": "b.txt", "text": "before"}]
    spec["nodes"]["after"] = {"kind": "input", "prompt": "More?", "output": "answer"}
    return spec


class Seeded:
    def __init__(self, tenant: Tenant, headers: dict[str, str], queue: InlineQueue) -> None:
        self.tenant = tenant
        self.headers = headers
        self.queue = queue

    def seed(self) -> None:
        """Graphs, a thread, a finished run with an artifact, a run waiting for approval."""
        tenant = self.tenant
        spec = chain_spec()
        spec["nodes"]["n0"]["artifacts"] = [{"name": "a.txt", "text": "hi"}]
        create_graph_version(tenant, spec)
        create_graph_version(tenant, approve_then_ask_spec())
        create_graph_version(tenant, ask_spec())
        member = key_client(tenant, Role.MEMBER)
        thread = member.post("/threads", {}).json()["id"]
        member.post("/runs", {"graph": "chain", "thread_id": thread})
        self.queue.drain()
        waiting = member.post("/runs", {"graph": "approve"}).json()["id"]
        self.queue.drain()
        cron = member.post("/crons", {"graph": "chain", "schedule": "@daily"}).json()["id"]
        tenant.http_allowed_hosts = ["127.0.0.1"]
        tenant.http_allow_private = True
        tenant.save(update_fields=["http_allowed_hosts", "http_allow_private"])
        webhook = create_subscription(tenant, url=WEBHOOK_URL)
        REAL.clear()
        REAL.update(
            cron_id=cron,
            webhook_id=str(webhook.public_id),
            run_id=waiting,
            thread_id=thread,
            artifact_id=str(Artifact.objects.filter(run__tenant=tenant)[0].public_id),
            name="approve",
            version="1",
            approval_id="gate@1",
        )
        assert Checkpoint.objects.exists()

    def reset(self) -> None:
        """Back to the seeded state: stateful scenarios must each start from the same data,
        or Hypothesis sees a replayed scenario draw differently (FlakyStrategyDefinition)."""
        self.queue.drain()
        Run.objects.filter(tenant=self.tenant).delete()
        Thread.objects.filter(tenant=self.tenant).delete()
        Graph.objects.filter(tenant=self.tenant).delete()
        Subscription.objects.filter(tenant=self.tenant).delete()
        Cron.objects.filter(tenant=self.tenant).delete()
        Tenant.objects.filter(pk=self.tenant.pk).update(running_count=0, queued_count=0)
        self.seed()


@pytest.fixture
def seeded(
    tenant: Tenant, monkeypatch: pytest.MonkeyPatch, settings: Any, tmp_path: Path
) -> Seeded:
    settings.MEDIA_ROOT = tmp_path
    queue = InlineQueue()
    monkeypatch.setattr(dispatch, "enqueue_run", queue.put)
    # Long polls would otherwise hold a generated request for up to a minute.
    monkeypatch.setattr(live, "WAIT_CAP_SECONDS", 0.2)
    monkeypatch.setattr(live, "STREAM_MAX_SECONDS", 0.2)
    monkeypatch.setattr(live, "HEARTBEAT_SECONDS", 0.05)
    _, raw = create_api_key(tenant, role=Role.OWNER)
    seeded = Seeded(tenant, {"Authorization": f"Bearer {raw}"}, queue)
    seeded.seed()
    return seeded


def _label(case: schemathesis.Case) -> str:
    return f"{case.operation.method.upper()} {case.operation.path.removeprefix('/api/v1')}"


@pytest.mark.django_db(transaction=True)
# Under WSGI, Django drains the async SSE generator synchronously and says so; ASGI streams.
@pytest.mark.filterwarnings("ignore:StreamingHttpResponse must consume asynchronous iterators")
@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms_to_its_openapi_document(case: schemathesis.Case, seeded: Seeded) -> None:
    response = case.call_and_validate(headers=seeded.headers, checks=CHECKS)
    seeded.queue.drain()
    assert response.status_code != 401, "generated requests must be authenticated"
    if case.method.upper() == case.operation.method.upper():
        STATUSES.setdefault(_label(case), set()).add(response.status_code)


@pytest.mark.django_db(transaction=True)
@pytest.mark.filterwarnings("ignore:StreamingHttpResponse must consume asynchronous iterators")
def test_stateful_sequences_follow_the_links_with_real_ids(seeded: Seeded) -> None:
    """Sequences of calls that feed each response's ids into the operations its links name:
    a created run into its steps, events, artifacts, approvals, input and controls."""

    class Machine(schema.as_state_machine()):  # type: ignore[misc]
        def setup(self) -> None:
            seeded.reset()

        def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, Any]:
            return {"headers": seeded.headers}

        def after_call(self, response: Any, case: schemathesis.Case) -> None:
            seeded.queue.drain()  # queued runs execute, so links reach waiting/ended runs
            STATEFUL_STATUSES.setdefault(_label(case), set()).add(response.status_code)

        def validate_response(
            self, response: Any, case: schemathesis.Case, additional_checks: Any = None, **kw: Any
        ) -> None:
            case.validate_response(
                response, checks=CHECKS, headers=kw.get("headers"), transport_kwargs=kw
            )

    Machine.run(
        settings=settings(
            max_examples=STATEFUL_EXAMPLES,
            stateful_step_count=STATEFUL_STEPS,
            derandomize=True,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
    )
    # Reached with ids that only earlier responses held (a created run, thread or graph).
    # Which operation of a chain a bounded, derandomized run reaches depends on every
    # operation the document has (a new one changes the draws), so the test asks for each
    # chain to be followed at least once, and for breadth.
    chains = {
        "run": {
            "GET /runs/{run_id}",
            "GET /runs/{run_id}/events",
            "GET /runs/{run_id}/steps",
            "GET /runs/{run_id}/wait",
            "GET /runs/{run_id}/artifacts",
        },
        "thread": {"GET /threads/{thread_id}", "GET /threads/{thread_id}/checkpoints"},
        "graph": {"GET /graphs/{name}", "GET /graphs/{name}/versions/{version}"},
    }
    succeeded = {op for op, codes in STATEFUL_STATUSES.items() if any(c < 300 for c in codes)}
    seen = {op: sorted(c) for op, c in sorted(STATEFUL_STATUSES.items())}
    print("stateful statuses:", seen)
    for chain, operations in chains.items():
        assert operations & succeeded, f"the {chain} links were never followed: {seen}"
    assert len(succeeded) >= 14, seen


def test_every_operation_succeeded_at_least_once() -> None:
    """Runs after the property test (file order): generated requests reached real objects,
    answered with success or, where the seeded data allows no success, a domain conflict."""
    if not STATUSES:
        pytest.skip("the property test did not run in this session")
    operations = {
        f"{method.upper()} {path.removeprefix('/api/v1')}"
        for path, item in schema.raw_schema["paths"].items()
        for method in item
    }
    assert set(STATUSES) == operations
    failing = {
        op: codes for op, codes in STATUSES.items() if not any(c < 300 or c == 409 for c in codes)
    }
    assert not failing, failing


def test_openapi_document_is_valid_openapi() -> None:
    schema.validate()  # raises on any violation of the OpenAPI 3.1 meta-schema
    assert schema.raw_schema["openapi"].startswith("3.1")
