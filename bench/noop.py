"""A no-op django-q2 task: the raw queue's speed, to compare Runyard's runs against."""


def noop() -> None:
    return None
