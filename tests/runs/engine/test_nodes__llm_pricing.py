"""Prices belong to the operator: billed providers are priced by the table, never by a spec."""

from __future__ import annotations

import math

import pytest

from runs.engine import RunContext, SpecError, parse_spec, pricing
from runs.engine.errors import Problem
from runs.engine.pricing import DEFAULT_PRICES, build_price_table, configure_prices, cost_usd

from .helpers import LocalServer, chain, run_all
from .test_nodes__llm_openai import ctx_for, node, streaming

USAGE = {"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500}


@pytest.fixture(autouse=True)
def _restore_price_table(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pricing, "_table", pricing.price_table())


def problems(spec: dict) -> list[Problem]:
    with pytest.raises(SpecError) as info:
        parse_spec(spec)
    return info.value.problems


def messages_at(found: list[Problem], where: str) -> str:
    return " | ".join(p.message for p in found if p.where == where)


def test_a_spec_cannot_price_a_billed_provider() -> None:
    found = problems(chain(("ask", node(price={"input": 0, "output": 0}))))
    message = messages_at(found, "nodes.ask")
    assert "`price` is not allowed with provider 'openai'" in message
    assert "operator's price table" in message


def test_a_billed_model_missing_from_the_table_is_refused_naming_node_and_model() -> None:
    found = problems(chain(("ask", node(model="gpt-9-ultra"))))
    message = messages_at(found, "nodes.ask")
    assert "'gpt-9-ultra'" in message and "not in the operator's price table" in message


def test_priced_models_and_their_dated_snapshots_are_accepted() -> None:
    parse_spec(chain(("ask", node(model="gpt-4o"))))
    parse_spec(chain(("ask", node(model="gpt-4o-mini-2024-07-18"))))
    parse_spec(chain(("ask", node(model="gpt-3.5-turbo-0125"))))
    # A family prefix is not a snapshot: a different product is not priced like its family.
    assert "not in the operator's price table" in messages_at(
        problems(chain(("ask", node(model="gpt-4o-audio-preview")))), "nodes.ask"
    )


@pytest.mark.parametrize("model", ["m" * 101, "", "two words", "nul\x00byte", " lead", 42, None])
def test_model_is_a_bounded_name_for_every_provider(model: object) -> None:
    for provider in ({"provider": "openai"}, {"provider": "scripted", "responses": ["x"]}):
        spec = chain(("ask", {**node(), **provider, "model": model}))
        assert "`model` must be a model name" in messages_at(problems(spec), "nodes.ask")
    parse_spec(chain(("ask", {**node(), "provider": "scripted", "responses": ["x"]})))


def test_unknown_providers_are_refused() -> None:
    found = problems(chain(("ask", node(provider="anthropic-free"))))
    assert "unknown provider 'anthropic-free'" in messages_at(found, "nodes.ask")


def test_the_scripted_provider_may_still_simulate_a_price() -> None:
    spec = {**node(), "provider": "scripted", "responses": ["a b"], "model": "anything"}
    parse_spec(chain(("ask", {**spec, "price": {"input": 3, "output": 1}})))
    bad = chain(("ask", {**spec, "price": {"input": -1, "output": math.inf}}))
    assert "`price` must be {input, output}" in messages_at(problems(bad), "nodes.ask")


def test_the_operator_table_adds_and_removes_models() -> None:
    spec = chain(("ask", node(model="local-llama")))
    with pytest.raises(SpecError):
        parse_spec(spec)
    configure_prices({"openai": {"local-llama": {"input": 0.5, "output": 1}, "gpt-4o": None}})
    parse_spec(spec)
    assert "not in the operator's price table" in messages_at(
        problems(chain(("ask", node(model="gpt-4o")))), "nodes.ask"
    )
    assert pricing.price_table()["openai"]["gpt-4o-mini"] == DEFAULT_PRICES["openai"]["gpt-4o-mini"]


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ([1, 2], "must map provider"),
        ({"nobody": {}}, "unknown provider"),
        ({"openai": ["gpt-4o"]}, "must map model"),
        ({"openai": {"bad model": {"input": 1, "output": 1}}}, "not a model name"),
        ({"openai": {"m": {"input": -1, "output": 1}}}, "USD per million tokens"),
        ({"openai": {"m": {"input": 1}}}, "USD per million tokens"),
        ({"openai": {"m": {"input": math.nan, "output": 1}}}, "USD per million tokens"),
        ({"openai": {"m": {"input": 1e9, "output": 1}}}, "USD per million tokens"),
        ({"openai": {"m": {"input": True, "output": 1}}}, "USD per million tokens"),
    ],
)
def test_a_malformed_operator_table_is_refused(overrides: object, words: str) -> None:
    before = pricing.price_table()
    with pytest.raises(ValueError, match=words):
        configure_prices(overrides)
    assert pricing.price_table() is before
    assert build_price_table(None) == DEFAULT_PRICES


def test_a_run_is_charged_the_operator_price_from_its_context(server: LocalServer) -> None:
    server.route("/v1/chat/completions", streaming(["ok"], USAGE))
    ctx = ctx_for(server)
    ctx.llm_config["openai"]["prices"] = {"house-model": (4.0, 8.0)}
    # Validation asks this process's table; the run pays what its context's table says.
    spec = parse_spec(chain(("ask", node(model="house-model"))), stored=True)
    usage = run_all(spec, {"text": "x"}, ctx)[0].usage
    assert usage.cost_usd == pytest.approx(cost_usd((4.0, 8.0), 1000, 500)) == 0.008


def test_a_stored_spec_price_on_a_billed_provider_is_ignored_at_run_time(
    server: LocalServer,
) -> None:
    server.route("/v1/chat/completions", streaming(["ok"], USAGE))
    spec = parse_spec(
        chain(("ask", node(model="gpt-4o", price={"input": 0, "output": 0}))), stored=True
    )
    usage = run_all(spec, {"text": "x"}, ctx_for(server))[0].usage
    assert usage.cost_usd == pytest.approx(cost_usd(DEFAULT_PRICES["openai"]["gpt-4o"], 1000, 500))
    assert usage.cost_usd > 0


def test_a_stored_unpriced_model_fails_fatally_before_any_request(server: LocalServer) -> None:
    server.route("/v1/chat/completions", streaming(["ok"], USAGE))
    spec = parse_spec(chain(("ask", node(model="gpt-9-ultra"))), stored=True)
    last = run_all(spec, {"text": "x"}, ctx_for(server))[-1]
    assert last.error["code"] == "model_not_priced" and "'gpt-9-ultra'" in last.error["message"]
    assert last.run_error["fatal"] is True
    assert server.requests == []


def test_the_run_context_table_is_the_authority_over_the_process_table(
    server: LocalServer,
) -> None:
    server.route("/v1/chat/completions", streaming(["ok"], USAGE))
    ctx = RunContext(
        llm_config={"openai": {"base_url": server.url + "/v1", "prices": {"other": (1.0, 1.0)}}}
    )
    last = run_all(chain(("ask", node(model="gpt-4o-mini"))), {"text": "x"}, ctx)[-1]
    assert last.error["code"] == "model_not_priced" and server.requests == []


def test_a_stored_overlong_model_fails_its_node_instead_of_the_ledger() -> None:
    spec = parse_spec(
        chain(("ask", {**node(), "provider": "scripted", "responses": ["x"], "model": "m" * 300})),
        stored=True,
    )
    last = run_all(spec, {"text": "x"})[-1]
    assert last.error["code"] == "llm_request" and last.run_error["fatal"] is True
