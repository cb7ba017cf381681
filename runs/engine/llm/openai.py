"""The `openai` provider: any OpenAI-compatible `/chat/completions` endpoint, streamed over SSE.

`base_url` and `api_key` come from `RunContext.llm_config["openai"]` (operator/tenant
configuration), never from the spec, so a graph cannot point credentials at a host of its
choosing. Usage comes from the final stream chunk (`stream_options.include_usage`); servers that
omit it are counted with the engine's tokenizer. The blocking HTTP call runs in a helper thread
so a cancel aborts the node within milliseconds even while a read is blocked.
"""

from __future__ import annotations

import contextlib
import json
from typing import TYPE_CHECKING, Any

import httpx

from ..errors import NodeError, RunCancelled
from ..threads import call_with_cancel
from ..values import is_int, is_number
from .base import LLMReply, Provider, register_provider
from .tokens import count_message_tokens, count_tokens

if TYPE_CHECKING:
    from ..context import NodeContext
    from ..speccheck import SpecCheck

DEFAULT_TIMEOUT = 120.0


def _status_error(status: int, body: str) -> NodeError:
    detail = body.strip()[:300]
    if status in (401, 403):
        return NodeError(
            "llm_auth", f"provider refused credentials ({status}): {detail}", fatal=True
        )
    if status in (408, 409, 429) or status >= 500:
        return NodeError("llm_unavailable", f"provider answered {status}: {detail}")
    return NodeError(
        "llm_request", f"provider rejected the request ({status}): {detail}", fatal=True
    )


@register_provider
class OpenAIProvider(Provider):
    name = "openai"
    requires = ("model",)
    default_model = "gpt-4o-mini"

    def validate(self, name: str, node: dict, check: SpecCheck) -> None:
        for field in self.requires:
            if field not in node:
                check.add(f"nodes.{name}", f"openai provider needs `{field}`")

    def complete(self, nc: NodeContext, messages: list[dict], model: str) -> LLMReply:
        config = nc.run.llm_config.get("openai") or {}
        base_url = config.get("base_url")
        if not base_url:
            raise NodeError(
                "llm_config", "provider 'openai' has no base_url configured", fatal=True
            )
        node = nc.node
        body: dict[str, Any] = {
            "model": model,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if is_number(node.get("temperature")):
            body["temperature"] = node["temperature"]
        if is_int(node.get("max_tokens")):
            body["max_tokens"] = node["max_tokens"]
        headers = {"Accept": "text/event-stream"}
        if config.get("api_key"):
            headers["Authorization"] = f"Bearer {config['api_key']}"
        timeout = float(node.get("timeout") or config.get("timeout") or DEFAULT_TIMEOUT)
        url = base_url.rstrip("/") + "/chat/completions"
        client = httpx.Client(timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)))

        def call() -> LLMReply:
            try:
                return self._stream(nc, client, url, body, headers, messages, model)
            except httpx.TimeoutException as exc:
                raise NodeError("llm_unavailable", f"provider timed out: {exc}") from None
            except httpx.HTTPError as exc:
                if nc.cancel.cancelled:
                    raise RunCancelled(nc.cancel.reason or "cancelled") from None
                raise NodeError("llm_unavailable", f"provider unreachable: {exc}") from None
            finally:
                client.close()

        def abandon() -> None:
            # Best effort: the helper thread ends on its own once its socket is gone.
            with contextlib.suppress(Exception):
                client.close()

        try:
            return call_with_cancel(call, nc.cancel, timeout + 5.0, on_abandon=abandon)
        except TimeoutError:
            raise NodeError("llm_unavailable", f"provider did not finish in {timeout}s") from None

    def _stream(
        self,
        nc: NodeContext,
        client: httpx.Client,
        url: str,
        body: dict,
        headers: dict,
        messages: list[dict],
        model: str,
    ) -> LLMReply:
        parts: list[str] = []
        usage: dict[str, Any] | None = None
        with client.stream("POST", url, json=body, headers=headers) as response:
            if response.status_code >= 400:
                response.read()
                raise _status_error(response.status_code, response.text)
            for line in response.iter_lines():
                if nc.cancel.cancelled:
                    raise RunCancelled(nc.cancel.reason or "cancelled")
                if not line.startswith("data:"):
                    continue
                payload = line[5:].strip()
                if payload == "[DONE]":
                    break
                try:
                    chunk = json.loads(payload)
                except ValueError:
                    raise NodeError(
                        "llm_unavailable", f"bad stream chunk: {payload[:100]}"
                    ) from None
                if chunk.get("error"):
                    raise NodeError("llm_unavailable", f"provider error: {chunk['error']}")
                if chunk.get("usage"):
                    usage = chunk["usage"]
                for choice in chunk.get("choices") or []:
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        parts.append(text)
                        nc.delta(text)
        text = "".join(parts)
        if usage:
            tokens_in = int(usage.get("prompt_tokens") or 0)
            tokens_out = int(usage.get("completion_tokens") or 0)
        else:
            tokens_in, tokens_out = count_message_tokens(messages), count_tokens(text)
        return LLMReply(text=text, tokens_in=tokens_in, tokens_out=tokens_out, model=model)
