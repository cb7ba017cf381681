"""Node kinds: one module per kind in this package, each registering itself.

Modules are discovered by listing the package, so a new kind is a new file and nothing else.
"""

from __future__ import annotations

import importlib
import pkgutil

from .base import KINDS, NodeKind, Outcome, get_kind, register_kind


def _discover() -> None:
    for module in pkgutil.iter_modules(__path__):
        if module.name != "base" and not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")


_discover()

__all__ = ["KINDS", "NodeKind", "Outcome", "get_kind", "register_kind"]
