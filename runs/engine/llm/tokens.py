"""A simple deterministic tokenizer: words, numbers and single punctuation marks.

Not any model's real tokenizer; it only has to be stable so scripted runs, tests and limits
are reproducible. `split_tokens` keeps the whitespace, so the pieces join back to the text.
"""

from __future__ import annotations

import re

_PIECE = re.compile(r"\s*(?:\w+|[^\w\s])|\s+")


def split_tokens(text: str) -> list[str]:
    """Pieces of `text` (each token with its leading whitespace), for streaming as deltas."""
    return _PIECE.findall(text)


def count_tokens(text: str) -> int:
    return sum(1 for piece in _PIECE.findall(text) if not piece.isspace())


def count_message_tokens(messages: list[dict]) -> int:
    return sum(count_tokens(str(message.get("content") or "")) for message in messages)
