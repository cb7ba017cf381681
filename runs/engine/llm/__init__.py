"""LLM providers for `llm` nodes: a provider turns messages into text, usage and deltas."""

from __future__ import annotations

# Import for registration side effects.
from . import openai, scripted  # noqa: E402, F401, I001
from .base import LLMReply, Provider, get_provider, providers, register_provider
from .tokens import count_tokens, split_tokens

__all__ = [
    "LLMReply",
    "Provider",
    "count_tokens",
    "get_provider",
    "providers",
    "register_provider",
    "split_tokens",
]
