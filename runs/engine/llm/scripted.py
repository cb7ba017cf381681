"""The `scripted` provider: offline and deterministic, for tests, demos and limit drills.

- `responses`: list used in turn by VISIT of the node: the node's n-th completed visit (its
  occurrence) gets `responses[n]`; once the list is used up the LAST response repeats
  (set `"cycle": true` to start over instead). Keying on the visit, not on a process-local
  counter, is what makes a resumed run produce the same answers as an uninterrupted one.
  Retries of the same visit get the same response. String responses are templates rendered
  against the state; other JSON values are returned as-is.
- `latency_ms`: simulated latency, waited on the cancel token (so cancel aborts it at once).
- `fail_times`: the first N attempts of each visit fail with a retryable `llm_unavailable`
  error, so `retry.max_attempts > fail_times` succeeds.
- Tokens are counted with the engine's simple tokenizer; the reply streams as one delta per
  token. `token_ms` (0 to 10,000) pauses between streamed tokens, waited on the cancel token
  like `latency_ms`, so live streaming can be seen and tested.
"""

from __future__ import annotations

import copy
import json
from typing import TYPE_CHECKING

from .. import fields as f
from ..errors import NodeError, RunCancelled
from ..fields import Field, Table
from ..values import is_int, is_number
from .base import LLMReply, Provider, register_provider
from .tokens import count_message_tokens, count_tokens, split_tokens

if TYPE_CHECKING:
    from ..context import NodeContext
    from ..speccheck import SpecCheck

# The longest pause between two streamed tokens: a demo knob, not a way to park a worker.
MAX_TOKEN_MS = 10_000


@register_provider
class ScriptedProvider(Provider):
    name = "scripted"
    field_table = Table(
        (
            Field(
                "responses",
                f.array(
                    {"description": "A string is a template; any other JSON is returned as is."},
                    min_items=1,
                ),
                required=True,
                doc="Used in turn, one per visit of the node; the last repeats.",
            ),
            Field("latency_ms", f.number(minimum=0), doc="Simulated latency."),
            Field(
                "token_ms",
                f.number(minimum=0, maximum=MAX_TOKEN_MS),
                doc="Pause between streamed tokens.",
            ),
            Field("fail_times", f.integer(minimum=0), doc="The first N attempts fail."),
            Field("cycle", f.boolean(), doc="Start the list over once it is used up."),
        )
    )
    default_model = "scripted"
    billed = False  # offline: a spec may set `price` to simulate costs

    def validate(self, name: str, node: dict, check: SpecCheck) -> None:
        where = f"nodes.{name}"
        responses = node.get("responses")
        if not isinstance(responses, list) or not responses:
            check.add(where, "scripted provider needs `responses`: a non-empty list")
        else:
            for i, response in enumerate(responses):
                if isinstance(response, str):
                    check.template(where, response, f"responses[{i}]")
        latency = node.get("latency_ms", 0)
        if not is_number(latency) or latency < 0:
            check.add(where, f"`latency_ms` must be a number >= 0, got {latency!r}")
        token_ms = node.get("token_ms", 0)
        if not is_number(token_ms) or not 0 <= token_ms <= MAX_TOKEN_MS:
            check.add(
                where, f"`token_ms` must be a number from 0 to {MAX_TOKEN_MS}, got {token_ms!r}"
            )
        fail_times = node.get("fail_times", 0)
        if not is_int(fail_times) or fail_times < 0:
            check.add(where, f"`fail_times` must be an integer >= 0, got {fail_times!r}")
        if not isinstance(node.get("cycle", False), bool):
            check.add(where, "`cycle` must be true or false")

    def complete(self, nc: NodeContext, messages: list[dict], model: str) -> LLMReply:
        node = nc.node
        latency = float(node.get("latency_ms", 0)) / 1000.0
        if latency and nc.cancel.wait(latency):
            raise RunCancelled(nc.cancel.reason or "cancelled")
        if nc.attempt <= int(node.get("fail_times", 0)):
            raise NodeError(
                "llm_unavailable",
                f"scripted failure (attempt {nc.attempt} of fail_times={node['fail_times']})",
            )
        responses = node["responses"]
        index = (
            nc.visit % len(responses) if node.get("cycle") else min(nc.visit, len(responses) - 1)
        )
        response = responses[index]
        value = None
        if isinstance(response, str):
            text = nc.render(response)
        else:
            value = copy.deepcopy(response)
            text = json.dumps(response, ensure_ascii=False)
        pause = float(node.get("token_ms", 0)) / 1000.0
        for i, piece in enumerate(split_tokens(text)):
            if pause and i and nc.cancel.wait(pause):
                raise RunCancelled(nc.cancel.reason or "cancelled")
            nc.delta(piece)
        return LLMReply(
            text=text,
            tokens_in=count_message_tokens(messages),
            tokens_out=count_tokens(text),
            model=model,
            value=value,
        )
