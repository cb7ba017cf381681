"""Each running qcluster registers how many workers it has, so the dispatcher's default
capacity is the workers of every machine sharing the database, not one process's setting.

Every worker process of a cluster, once spawned (django-q2's `post_spawn`), beats in a small
daemon thread: one upsert of the cluster's row every HEARTBEAT_SECONDS, idle or busy. Its
workers share the row (named by host, cluster name and the sentinel process that spawned
them), so a cluster counts once however many of its processes beat; a cluster that stops
drops out of the capacity once its row is older than `CLUSTER_SEEN_WITHIN` (tenants/cluster.py).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Any

from django.conf import settings
from django.db import connection

from tenants import cluster

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 10.0


def cluster_name() -> str:
    # A worker's parent is its cluster's sentinel: one name per running qcluster.
    return f"{socket.gethostname()}:{settings.Q_CLUSTER.get('name', '')}:{os.getppid()}"


def cluster_workers() -> int:
    from django_q.conf import Conf

    return int(Conf.WORKERS)


def beat() -> None:
    cluster.register_workers(cluster_name(), cluster_workers())


class Heartbeat:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start this process's heartbeat thread (once per process)."""
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
        try:
            beat()  # count at once: the dispatcher may use the capacity right away
            cluster.forget_stopped_clusters()
        except Exception:  # noqa: BLE001 - the thread beats again shortly
            log.warning("worker heartbeat failed", exc_info=True)
        finally:
            connection.close()
        self._thread = threading.Thread(target=self._serve, name="worker-heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _serve(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                beat()
            except Exception:  # noqa: BLE001 - a missed beat only shrinks the capacity a while
                log.warning("worker heartbeat failed", exc_info=True)
            finally:
                connection.close()  # between beats: hold no database session


heartbeat = Heartbeat()


def on_worker_spawned(sender: Any, **kwargs: Any) -> None:
    heartbeat.start()
