"""django-q2 entry points of the webhooks app (enqueued by id, on commit)."""

from __future__ import annotations

from collections.abc import Sequence

from webhooks import delivery


def deliver_webhooks(pks: Sequence[int]) -> list[str]:
    """The first attempt of deliveries a status change just wrote (webhooks/delivery.py)."""
    return delivery.deliver_webhooks(pks)
