"""Cooperative cancellation shared between the executor, its nodes and their helper threads."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable

from .errors import RunCancelled

_keys = itertools.count()


class CancelToken:
    """A thread-safe, one-shot cancellation flag.

    Nodes wait on it instead of `time.sleep` so a cancel wakes them at once, and helper threads
    register callbacks with `on_cancel` to abort blocking calls.
    """

    __slots__ = ("_flag", "_event", "_lock", "_callbacks", "_detach", "reason")

    def __init__(self) -> None:
        # The Event is made on the first wait(): most tokens (one per branch) never wait.
        self._flag = False
        self._event: threading.Event | None = None
        self._lock = threading.Lock()
        self._callbacks: dict[int, Callable[[], None]] = {}
        self._detach: Callable[[], None] | None = None
        self.reason: str | None = None

    @property
    def cancelled(self) -> bool:
        return self._flag

    def cancel(self, reason: str = "cancelled") -> None:
        """Cancel once; later calls keep the first reason. Callbacks run in the caller's thread."""
        with self._lock:
            if self._flag:
                return
            self.reason = reason
            self._flag = True
            event = self._event
            callbacks = list(self._callbacks.values())
            self._callbacks.clear()
        if event is not None:
            event.set()
        for callback in callbacks:
            callback()

    def wait(self, timeout: float | None) -> bool:
        """Sleep up to `timeout` seconds; True as soon as the token is cancelled."""
        with self._lock:
            if self._flag:
                return True
            if self._event is None:
                self._event = threading.Event()
            event = self._event
        return event.wait(timeout)

    def raise_if_cancelled(self) -> None:
        if self._flag:
            raise RunCancelled(self.reason or "cancelled")

    def on_cancel(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call `callback` on cancel (at once if already cancelled); returns an unregister."""
        with self._lock:
            if not self._flag:
                key = next(_keys)
                self._callbacks[key] = callback
                return lambda: self._remove(key)
        callback()
        return lambda: None

    def _remove(self, key: int) -> None:
        with self._lock:
            self._callbacks.pop(key, None)

    def child(self) -> CancelToken:
        """A token cancelled with this one that can also be cancelled on its own.

        Call `detach()` on the child when done with it so a long-lived parent does not keep
        a callback per finished child.
        """
        token = CancelToken()
        token._detach = self.on_cancel(lambda: token.cancel(self.reason or "cancelled"))
        return token

    def detach(self) -> None:
        """Stop following the parent (no-op for a root token)."""
        if self._detach is not None:
            self._detach()
            self._detach = None

    def __repr__(self) -> str:
        state = f"cancelled: {self.reason}" if self.cancelled else "active"
        return f"<CancelToken {state}>"
