"""Small text functions shipped with the engine (used by examples/graphs/document-pipeline.json).

Each reads its input from `args["field"]` (a state key, default "document") and writes to
`args["output"]`.
"""

from __future__ import annotations

import re
from collections import Counter

from .context import NodeContext
from .errors import NodeError
from .functions import register_function

_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")
_STOPWORDS = frozenset(
    """a an and are as at be been but by can could did do does for from had has have he her his
    how i if in into is it its just may more most no not of on or our over she should so
    some such than that the their them then there these they this those through to too under
    up very was we were what when where which while who will with would you your about also
    each other only own same both few many much""".split()  # noqa: SIM905
)


def _text(state: dict, args: dict) -> str:
    field = args.get("field", "document")
    value = state.get(field)
    if not isinstance(value, str):
        raise NodeError(
            "function_error", f"state key {field!r} must hold text", retryable=False, fatal=True
        )
    return value


@register_function("word_count")
def word_count(state: dict, ctx: NodeContext) -> dict:
    """Counts words, sentences and paragraphs; also estimates `reading_minutes`."""
    text = _text(state, ctx.args)
    words = len(_WORD.findall(text))
    stats = {
        "words": words,
        "sentences": len([s for s in re.split(r"[.!?]+", text) if s.strip()]),
        "paragraphs": len([p for p in re.split(r"\n\s*\n", text) if p.strip()]),
        "reading_minutes": round(words / 200, 1),
    }
    return {ctx.args.get("output", "stats"): stats}


@register_function("extract_keywords")
def extract_keywords(state: dict, ctx: NodeContext) -> dict:
    """The `top` most frequent non-stopwords; ties are broken alphabetically (deterministic)."""
    text = _text(state, ctx.args)
    top = int(ctx.args.get("top", 5))
    counts = Counter(
        word.lower()
        for word in _WORD.findall(text)
        if len(word) > 2 and word.lower() not in _STOPWORDS
    )
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:top]
    return {ctx.args.get("output", "keywords"): [word for word, _ in ranked]}


@register_function("chunk_text")
def chunk_text(state: dict, ctx: NodeContext) -> dict:
    """Splits text into chunks of at most `size` words, on paragraph boundaries where possible."""
    text = _text(state, ctx.args)
    size = max(1, int(ctx.args.get("size", 200)))
    chunks: list[str] = []
    current: list[str] = []
    for paragraph in (p.strip() for p in re.split(r"\n\s*\n", text)):
        words = paragraph.split()
        while words:
            room = size - len(current)
            if room <= 0:
                chunks.append(" ".join(current))
                current = []
                continue
            current.extend(words[:room])
            words = words[room:]
        if len(current) >= size:
            chunks.append(" ".join(current))
            current = []
    if current:
        chunks.append(" ".join(current))
    return {ctx.args.get("output", "chunks"): chunks}
