"""A no-op django-q2 task: the raw queue's speed, to compare Runyard's runs against."""


def noop() -> None:
    return None


def started_after(enqueued_at: float) -> float:
    """Seconds from the enqueue (the caller's clock, this machine) to this task's start."""
    import time

    return time.time() - enqueued_at


def noted(path: str, enqueued_at: float | None = None) -> None:
    """A no-op that says it ran by appending a line to `path` (the seconds from the enqueue to
    its start when `enqueued_at` is given): for tasks enqueued with `save=False`, which leave
    no row in django-q2's result table to count."""
    import os
    import time

    line = f"{time.time() - enqueued_at if enqueued_at is not None else 0}\n".encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
