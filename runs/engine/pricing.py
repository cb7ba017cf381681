"""LLM prices in USD per million tokens (input, output), used to turn usage into cost.

Unknown models cost 0 (their tokens are still counted). A node may override with
`"price": {"input": x, "output": y}` (USD per million tokens), e.g. for a self-hosted model.
The `scripted` price is deliberately non-zero so cost limits can be exercised offline.
"""

from __future__ import annotations

from typing import Any

PRICES: dict[str, tuple[float, float]] = {
    "scripted": (1.00, 2.00),
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "o3-mini": (1.10, 4.40),
    "o4-mini": (1.10, 4.40),
    "gpt-3.5-turbo": (0.50, 1.50),
}


def price_for(model: str, override: dict[str, Any] | None = None) -> tuple[float, float]:
    if override:
        return float(override.get("input", 0.0)), float(override.get("output", 0.0))
    if model in PRICES:
        return PRICES[model]
    # Dated snapshots ("gpt-4o-mini-2024-07-18") cost what their family costs.
    family = max((name for name in PRICES if model.startswith(name + "-")), key=len, default=None)
    return PRICES[family] if family else (0.0, 0.0)


def cost_usd(model: str, tokens_in: int, tokens_out: int, override: dict | None = None) -> float:
    price_in, price_out = price_for(model, override)
    return round((tokens_in * price_in + tokens_out * price_out) / 1_000_000, 10)
