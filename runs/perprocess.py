"""One object per OS process, made on first use.

Publishers and senders own threads, event loops and sockets; a qcluster worker forked from a
process that already made one must make its own, not share its parent's.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class PerProcess(Generic[T]):
    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._pid = 0
        self._value: T | None = None
        self._lock = threading.Lock()

    def get(self) -> T:
        pid = os.getpid()
        if self._pid != pid or self._value is None:
            with self._lock:
                if self._pid != pid or self._value is None:
                    self._value = self._factory()
                    self._pid = pid
        return self._value
