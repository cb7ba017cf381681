"""The provider interface and registry for `llm` nodes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from ..fields import Table

if TYPE_CHECKING:
    from ..context import NodeContext
    from ..speccheck import SpecCheck


@dataclass
class LLMReply:
    """One completed call. `value` carries a non-text scripted response as-is."""

    text: str
    tokens_in: int
    tokens_out: int
    model: str
    value: Any = None


class Provider:
    """Turns chat messages into a reply, streaming deltas through `nc.delta`."""

    name: ClassVar[str] = ""
    #: Node fields only this provider accepts, typed (validation and the JSON Schema read it).
    field_table: ClassVar[Table] = Table(())
    #: The names in `field_table` (set for each subclass).
    fields: ClassVar[frozenset[str]] = frozenset()
    #: `llm` node fields (of its own table) this provider needs.
    requires: ClassVar[tuple[str, ...]] = ()
    default_model: ClassVar[str] = ""
    #: Spends the operator's money: priced only by the operator's table, never by a spec.
    billed: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.fields = cls.field_table.names

    def validate(self, name: str, node: dict, check: SpecCheck) -> None:
        """Report provider-specific problems."""

    def complete(self, nc: NodeContext, messages: list[dict], model: str) -> LLMReply:
        raise NotImplementedError


_providers: dict[str, Provider] = {}


def register_provider(cls: type[Provider]) -> type[Provider]:
    _providers[cls.name] = cls()
    return cls


def get_provider(name: Any) -> Provider | None:
    return _providers.get(name) if isinstance(name, str) else None


def providers() -> dict[str, Provider]:
    return dict(_providers)
