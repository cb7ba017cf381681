"""`llm`: render a prompt, call a provider, write the reply to `output`.

Fields: provider, model?, prompt | messages, system?, history? (expression giving a list of
{role, content} put before the prompt), output, format? ("text" | "json": parse the reply),
temperature?, max_tokens?, price? ({input, output} USD per million tokens), plus the
provider's own fields (see runs/engine/llm/).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ..errors import NodeError
from ..llm import get_provider, providers
from ..pricing import cost_usd
from ..values import is_int, is_number
from .base import NodeKind, Outcome, register_kind

if TYPE_CHECKING:
    from ..context import NodeContext
    from ..validation import SpecCheck

_ROLES = {"system", "user", "assistant", "tool", "developer"}
_ALL_PROVIDER_FIELDS = frozenset().union(*(p.fields for p in providers().values()))


@register_kind
class LLMNode(NodeKind):
    kind = "llm"
    fields = (
        frozenset(
            {
                "provider",
                "model",
                "prompt",
                "messages",
                "system",
                "history",
                "output",
                "format",
                "temperature",
                "max_tokens",
                "price",
            }
        )
        | _ALL_PROVIDER_FIELDS
    )

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
                if not isinstance(message, dict) or message.get("role") not in _ROLES:
                    check.add(where, f"messages[{i}] needs a role in {sorted(_ROLES)}")
                    continue
                check.template(where, message.get("content"), f"messages[{i}].content")
        check.template(where, node.get("system"), "`system`", required=False)
        if "history" in node:
            check.expression(where, node["history"], "`history`")
        if node.get("format", "text") not in ("text", "json"):
            check.add(where, "`format` must be 'text' or 'json'")
        if "model" in node and (not isinstance(node["model"], str) or not node["model"]):
            check.add(where, "`model` must be a non-empty string")
        if "temperature" in node and not is_number(node["temperature"]):
            check.add(where, "`temperature` must be a number")
        if "max_tokens" in node and (not is_int(node["max_tokens"]) or node["max_tokens"] < 1):
            check.add(where, "`max_tokens` must be a positive integer")
        price = node.get("price")
        if price is not None and (
            not isinstance(price, dict)
            or set(price) - {"input", "output"}
            or not all(is_number(v) and v >= 0 for v in price.values())
        ):
            check.add(where, "`price` must be {input, output}: USD per million tokens, >= 0")

    def run(self, nc: NodeContext) -> Outcome:
        node = nc.node
        provider = get_provider(node["provider"])
        assert provider is not None  # validated
        model = node.get("model") or provider.default_model
        reply = provider.complete(nc, self._messages(nc), model)
        nc.usage.record(
            reply.model,
            reply.tokens_in,
            reply.tokens_out,
            cost_usd(reply.model, reply.tokens_in, reply.tokens_out, node.get("price")),
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


def _strip_fence(text: str) -> str:
    """Models often wrap JSON in a ``` fence; accept that."""
    stripped = text.strip()
    if stripped.startswith("```"):
        stripped = stripped.split("\n", 1)[1] if "\n" in stripped else ""
        stripped = stripped.rsplit("```", 1)[0]
    return stripped
