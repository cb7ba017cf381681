"""A no-op django-q2 task: the raw queue's speed, to compare Runyard's runs against."""


def noop() -> None:
    return None


def started_after(enqueued_at: float) -> float:
    """Seconds from the enqueue (the caller's clock, this machine) to this task's start."""
    import time

    return time.time() - enqueued_at
