"""Helper threads for parallel branches, node timeouts and blocking network calls.

A cached pool of daemon threads: a task always gets a thread at once (an idle one, or a new
one), so nested parallel nodes cannot deadlock on a bounded pool, and an abandoned call (a
function that ignores its timeout, a socket read that never returns) never blocks interpreter
exit. Idle workers retire after a while so a burst does not pin threads forever.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from .cancel import CancelToken
from .errors import RunCancelled

T = TypeVar("T")
logger = logging.getLogger(__name__)

_IDLE_SECONDS = 30.0


class _Pool:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle = 0
        self._tasks: queue.SimpleQueue[Callable[[], Any]] = queue.SimpleQueue()

    def submit(self, fn: Callable[[], Any]) -> None:
        with self._lock:
            if self._idle > 0:
                # Claim an idle worker and queue under the lock, so a worker retiring at the
                # same moment either sees this task or was never counted on.
                self._idle -= 1
                self._tasks.put(fn)
                return
        threading.Thread(target=self._work, args=(fn,), name="runyard-engine", daemon=True).start()

    def _work(self, fn: Callable[[], Any]) -> None:
        while True:
            try:
                fn()
            except BaseException:  # a task must not take its worker down with it
                logger.exception("engine helper task failed")
            del fn
            with self._lock:
                self._idle += 1
            try:
                fn = self._tasks.get(timeout=_IDLE_SECONDS)
            except queue.Empty:
                with self._lock:
                    # A submit may have claimed this worker between the timeout and the lock.
                    try:
                        fn = self._tasks.get_nowait()
                    except queue.Empty:
                        self._idle -= 1
                        return


_pool = _Pool()


def spawn(fn: Callable[[], Any]) -> None:
    """Run `fn` on a pooled daemon thread; `fn` must handle its own exceptions. It sees the
    caller's context variables (a copy): the run a log line is written for, the current span."""
    _pool.submit(functools.partial(contextvars.copy_context().run, fn))


def call_with_cancel(
    fn: Callable[[], T],
    token: CancelToken,
    timeout: float | None = None,
    on_abandon: Callable[[], None] | None = None,
) -> T:
    """Run `fn` in a helper thread and return its result, or give up early.

    Raises RunCancelled as soon as `token` is cancelled and TimeoutError after `timeout`
    seconds; either way `on_abandon` (e.g. closing a socket) is called and the helper thread
    is left to finish on its own.
    """
    wake = threading.Event()
    box: dict[str, Any] = {}

    def task() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the waiting thread
            box["error"] = exc
        finally:
            box["done"] = True
            wake.set()

    spawn(task)
    unregister = token.on_cancel(wake.set)
    try:
        wake.wait(timeout)
    finally:
        unregister()
    if box.get("done"):
        # Finished (possibly in the same instant as a cancel): its own result wins; the
        # executor checks the token again before the next step anyway.
        if "error" in box:
            raise box["error"]
        return box["value"]  # type: ignore[no-any-return]
    if on_abandon is not None:
        on_abandon()
    if token.cancelled:
        raise RunCancelled(token.reason or "cancelled")
    raise TimeoutError(f"gave up after {timeout}s")
