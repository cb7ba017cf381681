"""The multiprocess directory's housekeeping: stale files at start, a worker's files at exit.

prometheus-client's multiprocess mode keeps one mmap file per process and metric type
(`counter_<pid>.db`, `histogram_<pid>.db`) in PROMETHEUS_MULTIPROC_DIR, and /metrics sums
every file there. Its docs say to wipe the directory before the processes start and to call
`mark_process_dead` when one exits. Here the web process and the worker cluster start on
their own, so each removes, at its start, only the files of processes that are gone (a
process's files hold its counts since it started: once it is gone and the platform restarts,
they are stale). qcluster recycles its workers (Q_CLUSTER["recycle"]) and forks new ones with
new pids, so an exiting worker also folds its counters and histograms into the `*_archive.db`
files: the sums stay monotonic and the directory does not grow by two files per recycle.
A worker killed outright (SIGKILL) cannot: /metrics folds the files of dead pids first.

Everything that reads or rewrites the files takes one lock (flock on `.lock`), so a scrape
never sees a worker's counts twice (in its file and in the archive) or not at all.

The directory must be per machine and per PID namespace: pids are checked with kill(pid, 0).
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ARCHIVE = "archive"
# Types whose values add up across processes (gauges do not: mark_process_dead handles them).
SUMMED = ("counter", "histogram", "summary")


def directory() -> Path | None:
    value = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    return Path(value) if value else None


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    with open(path / ".lock", "a+") as fd:  # noqa: PTH123 - flock needs the descriptor
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)


def _pid_of(name: str) -> int | None:
    """The pid in `counter_123.db` / `gauge_livesum_123.db`; None for the archive."""
    tail = name[: -len(".db")].rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else None


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _files(path: Path) -> list[Path]:
    return [Path(f) for f in glob.glob(str(path / "*.db"))]


def clean_stale(path: Path | None = None) -> int:
    """At a web or worker process's start: delete the files of processes that are gone, and
    the archives too when no live process has files left (the whole machine restarted).
    Returns how many files were deleted."""
    path = path or directory()
    if path is None:
        return 0
    path.mkdir(parents=True, exist_ok=True)
    removed = 0
    with locked(path):
        files = _files(path)
        live = False
        for f in files:
            pid = _pid_of(f.name)
            if pid is None:
                continue
            if _alive(pid):
                live = True
                continue
            with contextlib.suppress(FileNotFoundError):
                f.unlink()
                removed += 1
        if not live:
            for f in files:
                if _pid_of(f.name) is None:
                    with contextlib.suppress(FileNotFoundError):
                        f.unlink()
                        removed += 1
    if removed:
        log.info("metrics: removed %d stale file(s) from %s", removed, path)
    return removed


def _fold(path: Path, files: Iterable[Path]) -> None:
    """Add the values of `files` into the archive of their type, then delete them. Locked."""
    from prometheus_client.mmap_dict import MmapedDict

    archives: dict[str, Any] = {}
    try:
        for f in files:
            typ = f.name.split("_", 1)[0]
            if typ not in SUMMED:
                continue
            try:
                values = list(MmapedDict.read_all_values_from_file(str(f)))
            except FileNotFoundError:
                continue
            archive = archives.get(typ)
            if archive is None:
                archive = archives[typ] = MmapedDict(str(path / f"{typ}_{ARCHIVE}.db"))
            for key, value, _timestamp, _pos in values:
                if value:
                    current, _ = archive.read_value(key)
                    archive.write_value(key, current + value, 0.0)
            f.unlink()
    finally:
        for archive in archives.values():
            archive.close()


def fold_dead(path: Path | None = None) -> None:
    """Fold the counters and histograms of processes that are gone into the archives (a
    worker killed outright never folded its own). Call under `locked`."""
    path = path or directory()
    if path is None:
        return
    dead = []
    for f in _files(path):
        pid = _pid_of(f.name)
        if pid is not None and not _alive(pid) and f.name.split("_", 1)[0] in SUMMED:
            dead.append(f)
    if dead:
        _fold(path, dead)


def on_worker_exit() -> None:
    """In a qcluster worker process as it exits (a multiprocessing finalizer)."""
    path = directory()
    if path is None:
        return
    try:
        from prometheus_client import multiprocess

        pid = os.getpid()
        multiprocess.mark_process_dead(pid, str(path))
        with locked(path):
            _fold(path, [f for f in _files(path) if _pid_of(f.name) == pid])
    except Exception:  # noqa: BLE001 - a process that is exiting must still exit
        log.warning("metrics: could not fold this worker's files", exc_info=True)


def collect(path: Path | None = None) -> list[Any]:
    """Every process's metrics on this machine, summed (the archives included)."""
    from prometheus_client.multiprocess import MultiProcessCollector

    path = path or directory()
    if path is None:
        return []
    with locked(path):
        fold_dead(path)
        return list(MultiProcessCollector.merge([str(f) for f in _files(path)]))
