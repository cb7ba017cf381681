"""The contract every node kind implements, and the kind registry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from ..fields import Table
from ..results import Suspension

if TYPE_CHECKING:
    from ..context import NodeContext
    from ..speccheck import SpecCheck


@dataclass(slots=True)
class Outcome:
    """What one node attempt produced.

    `route` forces the next node (approval reject/reroute); `suspension` means the node is
    waiting outside the process and the run stops here until the runtime resolves it.
    `state`, when set, is the new state the node already merged itself (a parallel merges
    branch by branch through the reducers, which one combined update cannot express), and
    `updates` the sequence of raw updates that, applied in order, lead there.
    """

    update: dict
    route: str | None = None
    suspension: Suspension | None = None
    state: dict | None = None
    updates: list[dict] | None = None


class NodeKind:
    """Base class of a node kind: one subclass per file, registered with `@register_kind`."""

    kind: ClassVar[str] = ""
    #: The fields this kind accepts beyond the common ones (kind, retry, timeout, artifacts...),
    #: with their types and bounds: validation and the published JSON Schema both read it.
    field_table: ClassVar[Table] = Table(())
    #: The names in `field_table` (set for each subclass).
    fields: ClassVar[frozenset[str]] = frozenset()
    #: Whether it may appear as a branch of a `parallel` (suspending kinds may not).
    branchable: ClassVar[bool] = True
    #: An `end` node finishes the run and takes no outgoing edges.
    terminal: ClassVar[bool] = False
    #: `timeout` is a suspension deadline (approval, input), not a limit on execution time.
    timeout_is_deadline: ClassVar[bool] = False
    #: Computes in memory only: no call out of the process, no wait, no side effect. Running
    #: it again after a crash is indistinguishable from the first time, so the runtime may
    #: commit a stretch of such steps together instead of one by one.
    pure: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.fields = cls.field_table.names

    def validate(self, name: str, node: dict, check: SpecCheck) -> None:
        """Report kind-specific problems through `check`; the default accepts anything."""

    def extra_targets(self, node: dict) -> list[str]:
        """Nodes this one can route to besides its edges (e.g. an approval's `on_reject`)."""
        return []

    def children(self, node: dict) -> list[str]:
        """Nodes run inside this one (a parallel's branches)."""
        return []

    def run(self, nc: NodeContext) -> Outcome:
        raise NotImplementedError


KINDS: dict[str, NodeKind] = {}


def register_kind(cls: type[NodeKind]) -> type[NodeKind]:
    """Class decorator: make `cls` the handler of `cls.kind`."""
    if not cls.kind:
        raise ValueError(f"{cls.__name__} has no kind")
    KINDS[cls.kind] = cls()
    return cls


def get_kind(kind: Any) -> NodeKind | None:
    return KINDS.get(kind) if isinstance(kind, str) else None
