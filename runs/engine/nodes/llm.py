"""`llm`: render a prompt, call a provider, write the reply to `output`.

Fields: provider, model?, prompt | messages, system?, history? (expression giving a list of
{role, content} put before the prompt), output, format? ("text" | "json": parse the reply),
temperature?, max_tokens?, price? ({input, output} USD per million tokens; `scripted` only:
billed providers are priced by the operator's table, see runs/engine/pricing.py), plus the
provider's own fields (see runs/engine/llm/).
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

from .. import fields as f
from ..errors import NodeError
from ..fields import Field, Table
from ..llm import Provider, get_provider, providers
from ..pricing import (
    MAX_MODEL_LENGTH,
    MODEL_NAME,
    Price,
    cost_usd,
    lookup,
    price_table,
    simulated_price,
)
from ..values import is_int, is_number
from .base import NodeKind, Outcome, register_kind

if TYPE_CHECKING:
    from ..context import NodeContext
    from ..speccheck import SpecCheck

_ROLES = {"system", "user", "assistant", "tool", "developer"}
# Bounds of the `llm.request` event (the rendered messages, for the step inspector).
REQUEST_MAX_MESSAGES = 40
REQUEST_MAX_CHARS = 8_000
REQUEST_TOTAL_CHARS = 24_000
_ALL_PROVIDER_FIELDS = frozenset().union(*(p.fields for p in providers().values()))
FORMATS = ("text", "json")


def _provider_rule(provider: Provider) -> dict[str, Any]:
    """What one provider adds: its required fields, and no other provider's fields."""
    then: dict[str, Any] = {
        "properties": {name: False for name in sorted(_ALL_PROVIDER_FIELDS - provider.fields)}
    }
    if provider.billed:
        then["properties"]["price"] = False  # priced by the operator's table only
    if provider.requires:
        then["required"] = list(provider.requires)
    return {
        "if": {"properties": {"provider": {"const": provider.name}}, "required": ["provider"]},
        "then": then,
    }


def _table() -> Table:
    own = (
        Field("provider", f.enum(*sorted(providers())), required=True, doc="Who answers."),
        Field(
            "model",
            f.string(pattern=f"^{MODEL_NAME.pattern}$", min_length=1, max_length=MAX_MODEL_LENGTH),
            doc="The model's name (default: the provider's).",
        ),
        Field("prompt", f.template(), doc="The user message (or `messages`)."),
        Field(
            "messages",
            f.array(
                {
                    "type": "object",
                    "properties": {
                        "role": f.enum(*sorted(_ROLES)),
                        "content": f.template(),
                    },
                    "required": ["role", "content"],
                },
                min_items=1,
            ),
            doc="Chat messages (or `prompt`).",
        ),
        Field("system", f.nullable(f.template()), doc="The system message."),
        Field("history", f.expression(), doc="Gives a list of {role, content} put first."),
        Field("output", f.state_key(), required=True, doc="Receives the reply."),
        Field("format", f.enum(*FORMATS), doc="`json` parses the reply (default `text`)."),
        Field("temperature", f.number(), doc="Sampling temperature."),
        Field("max_tokens", f.integer(minimum=1), doc="Reply length limit."),
        Field(
            "price",
            {
                "type": "object",
                "properties": {
                    "input": f.number(minimum=0),
                    "output": f.number(minimum=0),
                },
                "additionalProperties": False,
                "description": "USD per million tokens; simulated providers (`scripted`) only.",
            },
            doc="Simulated price.",
        ),
    )
    extra = tuple(
        item for name in sorted(providers()) for item in providers()[name].field_table.fields
    )
    rules = [f.exactly_one_of("prompt", "messages")]
    rules += [_provider_rule(providers()[name]) for name in sorted(providers())]
    return Table(own + extra, rules={"allOf": rules})


@register_kind
class LLMNode(NodeKind):
    kind = "llm"
    field_table = _table()

    def validate(self, name: str, node: dict, check: SpecCheck) -> None:
        where = f"nodes.{name}"
        provider = get_provider(node.get("provider"))
        if provider is None:
            known = ", ".join(sorted(providers()))
            check.add(where, f"unknown provider {node.get('provider')!r} (known: {known})")
        else:
            foreign = {f for f in node if f in _ALL_PROVIDER_FIELDS and f not in provider.fields}
            for field in sorted(foreign):
                check.add(where, f"field {field!r} does not apply to provider {provider.name!r}")
            provider.validate(name, node, check)
        check.key(where, node, "output")
        if ("prompt" in node) == ("messages" in node):
            check.add(where, "needs exactly one of `prompt` (template) or `messages` (list)")
        elif "prompt" in node:
            check.template(where, node["prompt"], "`prompt`")
        elif not isinstance(node["messages"], list) or not node["messages"]:
            check.add(where, "`messages` must be a non-empty list of {role, content}")
        else:
            for i, message in enumerate(node["messages"]):
                # `in` a set hashes the role: an object there must not raise (a 500).
                role = message.get("role") if isinstance(message, dict) else None
                if not isinstance(role, str) or role not in _ROLES:
                    check.add(where, f"messages[{i}] needs a role in {sorted(_ROLES)}")
                    continue
                check.template(where, message.get("content"), f"messages[{i}].content")
        check.template(where, node.get("system"), "`system`", required=False)
        if "history" in node:
            check.expression(where, node["history"], "`history`")
        if node.get("format", "text") not in FORMATS:
            check.add(where, "`format` must be 'text' or 'json'")
        if "model" in node and not _model_ok(node["model"], check.stored):
            check.add(
                where,
                f"`model` must be a model name: 1-{MAX_MODEL_LENGTH} letters, digits or "
                "'._:/@+-', starting with a letter or digit",
            )
        if "temperature" in node and not is_number(node["temperature"]):
            check.add(where, "`temperature` must be a number")
        if "max_tokens" in node and (not is_int(node["max_tokens"]) or node["max_tokens"] < 1):
            check.add(where, "`max_tokens` must be a positive integer")
        if provider is not None and provider.billed:
            self._check_operator_price(name, node, provider, check)
        elif "price" in node and not _simulated_price_ok(node["price"]):
            check.add(where, "`price` must be {input, output}: USD per million tokens, >= 0")

    def _check_operator_price(
        self, name: str, node: dict, provider: Provider, check: SpecCheck
    ) -> None:
        if check.stored:
            return  # priced at run time, by the table of the day (`_price`)
        where = f"nodes.{name}"
        if "price" in node:
            check.add(
                where,
                f"`price` is not allowed with provider {provider.name!r}: prices of real "
                "providers are set by the operator's price table",
            )
        model = node.get("model", provider.default_model)
        if not isinstance(model, str) or not MODEL_NAME.fullmatch(model):
            return  # reported above
        if lookup(price_table().get(provider.name, {}), model) is None:
            check.add(
                where,
                f"model {model!r} of provider {provider.name!r} is not in the operator's price "
                "table; ask the operator to price it",
            )

    def run(self, nc: NodeContext) -> Outcome:
        node = nc.node
        provider = get_provider(node["provider"])
        assert provider is not None  # validated
        model = node.get("model") or provider.default_model
        price = _price(nc, provider, model)
        messages = self._messages(nc)
        # Before the call, so a failed call's step still shows what was sent.
        nc.emit("llm.request", request_record(nc, provider.name, model, messages))
        reply = provider.complete(nc, messages, model)
        nc.usage.record(
            reply.model,
            reply.tokens_in,
            reply.tokens_out,
            cost_usd(price, reply.tokens_in, reply.tokens_out),
        )
        value: Any
        if node.get("format") == "json":
            try:
                value = json.loads(_strip_fence(reply.text))
            except ValueError:
                raise NodeError(
                    "llm_bad_json", f"reply is not JSON: {reply.text[:200]!r}"
                ) from None
        elif reply.value is not None:
            value = reply.value
        else:
            value = reply.text
        return Outcome({node["output"]: value})

    def _messages(self, nc: NodeContext) -> list[dict]:
        node = nc.node
        messages: list[dict] = []
        if node.get("system"):
            messages.append({"role": "system", "content": nc.render(node["system"])})
        if "history" in node:
            history = nc.evaluate(node["history"]) or []
            if not isinstance(history, list) or not all(
                isinstance(m, dict) and "role" in m for m in history
            ):
                raise NodeError(
                    "llm_request", "`history` must give a list of {role, content}", fatal=True
                )
            messages.extend({"role": m["role"], "content": m.get("content", "")} for m in history)
        if "prompt" in node:
            messages.append({"role": "user", "content": nc.render(node["prompt"])})
        else:
            messages.extend(
                {"role": m["role"], "content": nc.render(m.get("content", ""))}
                for m in node["messages"]
            )
        return messages


def request_record(
    nc: NodeContext, provider: str, model: str, messages: list[dict]
) -> dict[str, Any]:
    """The rendered messages as the step inspector shows them, bounded here (a history can be
    long, a rendered prompt large) so the event stays small whatever the spec renders:
    at most REQUEST_MAX_MESSAGES messages (the first, usually the system prompt, and the
    latest), each cut to REQUEST_MAX_CHARS characters, REQUEST_TOTAL_CHARS in all."""
    kept = messages
    omitted = 0
    if len(messages) > REQUEST_MAX_MESSAGES:
        kept = messages[:1] + messages[-(REQUEST_MAX_MESSAGES - 1) :]
        omitted = len(messages) - REQUEST_MAX_MESSAGES
    budget = REQUEST_TOTAL_CHARS
    shown: list[dict[str, Any]] = []
    for message in kept:
        content = message.get("content", "")
        text = content if isinstance(content, str) else json.dumps(content, default=str)
        room = max(0, min(REQUEST_MAX_CHARS, budget))
        item: dict[str, Any] = {"role": str(message.get("role", "")), "content": text[:room]}
        if len(text) > room:
            item["truncated_chars"] = len(text) - room
        budget -= len(item["content"])
        shown.append(item)
    record: dict[str, Any] = {
        "node": nc.name,
        "attempt": nc.attempt,
        "provider": provider,
        "model": model,
        "messages": shown,
    }
    if omitted:
        record["omitted_messages"] = omitted
    for key in ("format", "temperature", "max_tokens"):
        if key in nc.node:
            record[key] = nc.node[key]
    return record


def _model_ok(model: Any, stored: bool) -> bool:
    # Versions stored before model names were bounded load as they were; `_price` refuses them.
    if stored:
        return isinstance(model, str) and bool(model)
    return isinstance(model, str) and MODEL_NAME.fullmatch(model) is not None


def _simulated_price_ok(price: Any) -> bool:
    return (
        isinstance(price, dict)
        and not set(price) - {"input", "output"}
        and all(is_number(v) and math.isfinite(v) and v >= 0 for v in price.values())
    )


def _price(nc: NodeContext, provider: Provider, model: str) -> Price:
    """Looked up before the call, so an unpriced model never spends the operator's money."""
    if not MODEL_NAME.fullmatch(model):
        raise NodeError(
            "llm_request", f"`model` is not a model name: {model[:MAX_MODEL_LENGTH]!r}", fatal=True
        )
    if not provider.billed:
        return simulated_price(model, nc.node.get("price"))
    # The run's own table (RunContext.llm_config[provider]["prices"]) else this process's; a
    # spec's `price` is ignored here, even in a version stored before it was refused.
    prices = (nc.run.llm_config.get(provider.name) or {}).get("prices")
    price = lookup(price_table().get(provider.name, {}) if prices is None else prices, model)
    if price is None:
        raise NodeError(
            "model_not_priced",
            f"model {model!r} of provider {provider.name!r} is not in the operator's price "
            "table; ask the operator to price it",
            fatal=True,
        )
    return price


def _strip_fence(text: str) -> str:
    """Models often wrap JSON in a ``` fence; accept that."""
    stripped = text.strip()
    if stripped.startswith("```"):
        stripped = stripped.split("\n", 1)[1] if "\n" in stripped else ""
        stripped = stripped.rsplit("```", 1)[0]
    return stripped
