"""LLM prices: the operator's price table turns token usage into cost.

Prices are USD per million tokens, `(input, output)`, the unit providers publish. A billed
provider (one that spends the operator's money, e.g. `openai`) is priced only by the operator's
table: a spec cannot set `price` there, and a model missing from the table is refused at
validation and, for versions stored before a table change, fails its node at run time with
`model_not_priced` before any request is sent. So `max_cost_usd` and the budgets always see a
real cost. The offline `scripted` provider costs nothing real; a spec may set its `price` to
simulate costs, and otherwise it is priced like the model it names (or `scripted`, 1 and 2).

The table is `DEFAULT_PRICES` with the operator's overrides on top (`configure_prices`, called
once per process from Django's side with settings.RUNYARD["LLM_PRICES"]). An override maps
provider -> model -> `{"input": x, "output": y}`, or `null` to remove a built-in model.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

Price = tuple[float, float]
PriceTable = dict[str, dict[str, Price]]

# Public list prices (USD per 1M tokens) of well-known OpenAI models; operators override them.
DEFAULT_PRICES: PriceTable = {
    "openai": {
        "gpt-5": (1.25, 10.00),
        "gpt-5-mini": (0.25, 2.00),
        "gpt-5-nano": (0.05, 0.40),
        "gpt-4.1": (2.00, 8.00),
        "gpt-4.1-mini": (0.40, 1.60),
        "gpt-4.1-nano": (0.10, 0.40),
        "gpt-4o": (2.50, 10.00),
        "gpt-4o-mini": (0.15, 0.60),
        "gpt-4-turbo": (10.00, 30.00),
        "gpt-4": (30.00, 60.00),
        "gpt-3.5-turbo": (0.50, 1.50),
        "o1": (15.00, 60.00),
        "o3": (2.00, 8.00),
        "o3-mini": (1.10, 4.40),
        "o4-mini": (1.10, 4.40),
    },
}
# What `scripted` simulates when a spec sets no price: its own model, else the named model's
# list price. Deliberately non-zero so cost limits can be drilled offline.
SCRIPTED_PRICE: Price = (1.00, 2.00)

# Model names are ledger keys (a 100-character column) and end up in requests and logs.
MAX_MODEL_LENGTH = 100
MODEL_NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._:/@+-]{{0,{MAX_MODEL_LENGTH - 1}}}")
# A bound that catches a unit mistake (per token instead of per million) in the operator's table.
MAX_PRICE = 100_000.0
# Dated snapshots ("gpt-4o-mini-2024-07-18", "gpt-3.5-turbo-0125") cost what their family costs.
_SNAPSHOT = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{4})$")

_table: PriceTable = {provider: dict(models) for provider, models in DEFAULT_PRICES.items()}


def valid_price(value: Any) -> bool:
    """A `{input, output}` object of finite, non-negative numbers within MAX_PRICE."""
    return (
        isinstance(value, dict)
        and set(value) == {"input", "output"}
        and all(
            isinstance(v, (int, float))
            and not isinstance(v, bool)
            and math.isfinite(v)
            and 0 <= v <= MAX_PRICE
            for v in value.values()
        )
    )


def build_price_table(overrides: Any, providers: frozenset[str] | None = None) -> PriceTable:
    """DEFAULT_PRICES with `overrides` applied; raises ValueError naming the bad entry."""
    table = {provider: dict(models) for provider, models in DEFAULT_PRICES.items()}
    if overrides is None:
        return table
    if not isinstance(overrides, Mapping):
        raise ValueError("LLM_PRICES must map provider -> model -> {input, output}")
    for provider, models in overrides.items():
        if providers is not None and provider not in providers:
            raise ValueError(
                f"LLM_PRICES.{provider}: unknown provider (known: {sorted(providers)})"
            )
        if not isinstance(models, Mapping):
            raise ValueError(f"LLM_PRICES.{provider} must map model -> {{input, output}}")
        entries = table.setdefault(provider, {})
        for model, price in models.items():
            where = f"LLM_PRICES.{provider}.{model}"
            if not isinstance(model, str) or not MODEL_NAME.fullmatch(model):
                raise ValueError(f"{where}: not a model name")
            if price is None:
                entries.pop(model, None)
            elif valid_price(price):
                entries[model] = (float(price["input"]), float(price["output"]))
            else:
                raise ValueError(
                    f"{where}: must be {{input, output}}, USD per million tokens, "
                    f"0 to {MAX_PRICE:g}, or null to remove the model"
                )
    return table


def configure_prices(overrides: Any) -> None:
    """Install the operator's table for this process (validation and runs without their own)."""
    global _table
    from .llm import providers  # late: providers may price their own calls one day

    _table = build_price_table(overrides, frozenset(providers()))


def price_table() -> PriceTable:
    return _table


def lookup(prices: Mapping[str, Price], model: str) -> Price | None:
    """The price of `model` in one provider's table, or None when it is not priced."""
    if model in prices:
        return prices[model]
    family = _SNAPSHOT.sub("", model)
    return prices.get(family) if family != model else None


def simulated_price(model: str, override: Mapping[str, Any] | None = None) -> Price:
    """What a `scripted` call costs: the spec's own price, else the named model's list price."""
    if override:
        return float(override.get("input", 0.0)), float(override.get("output", 0.0))
    if model == "scripted":
        return SCRIPTED_PRICE
    for prices in _table.values():
        price = lookup(prices, model)
        if price is not None:
            return price
    return (0.0, 0.0)


def cost_usd(price: Price, tokens_in: int, tokens_out: int) -> float:
    return round((tokens_in * price[0] + tokens_out * price[1]) / 1_000_000, 10)
