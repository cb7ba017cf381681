"""The multiprocess directory: stale files go at start, dead processes' counts are folded
into the archive (sums stay the same, the directory stays small)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from prometheus_client.mmap_dict import MmapedDict, mmap_key

from observability import multiproc

DEAD = 999_999_990  # above any pid_max: never a live process


def write(path: Path, name: str, values: dict[str, float]) -> None:
    d = MmapedDict(str(path / name))
    for bucket, v in values.items():
        key = mmap_key("runyard_x", "runyard_x_bucket", ["tenant", "le"], ["t", bucket], "help")
        d.write_value(key, v, 0.0)
    d.close()


def counter(path: Path, name: str, value: float) -> None:
    d = MmapedDict(str(path / name))
    d.write_value(mmap_key("runyard_c", "runyard_c_total", ["tenant"], ["t"], "help"), value, 0.0)
    d.close()


def samples(path: Path) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in multiproc.collect(path):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_dead_processes_are_folded_into_the_archive_and_sums_stay(tmp_path: Path) -> None:
    counter(tmp_path, f"counter_{DEAD}.db", 3)
    counter(tmp_path, f"counter_{DEAD + 1}.db", 4)
    counter(tmp_path, f"counter_{os.getpid()}.db", 5)  # this process: alive
    first = samples(tmp_path)
    assert first[("runyard_c_total", (("tenant", "t"),))] == 12
    names = {f.name for f in tmp_path.glob("*.db")}
    assert names == {"counter_archive.db", f"counter_{os.getpid()}.db"}
    counter(tmp_path, f"counter_{DEAD + 2}.db", 1)
    assert samples(tmp_path)[("runyard_c_total", (("tenant", "t"),))] == 13


def test_histogram_buckets_fold_bucket_by_bucket(tmp_path: Path) -> None:
    write(tmp_path, f"histogram_{DEAD}.db", {"0.1": 1, "1.0": 2})
    write(tmp_path, f"histogram_{DEAD + 1}.db", {"0.1": 3})
    got = samples(tmp_path)
    assert got[("runyard_x_bucket", (("le", "0.1"), ("tenant", "t")))] == 4
    assert got[("runyard_x_bucket", (("le", "1.0"), ("tenant", "t")))] == 6  # cumulative


def test_at_start_only_dead_processes_files_go(tmp_path: Path) -> None:
    counter(tmp_path, f"counter_{DEAD}.db", 1)
    counter(tmp_path, "counter_archive.db", 7)
    counter(tmp_path, f"counter_{os.getpid()}.db", 1)
    assert multiproc.clean_stale(tmp_path) == 1
    assert {f.name for f in tmp_path.glob("*.db")} == {
        "counter_archive.db",
        f"counter_{os.getpid()}.db",
    }
    (tmp_path / f"counter_{os.getpid()}.db").rename(tmp_path / f"counter_{DEAD}.db")
    # nothing alive uses the directory: the whole machine restarted, the archive goes too
    assert multiproc.clean_stale(tmp_path) == 2
    assert list(tmp_path.glob("*.db")) == []


def test_a_process_folds_its_own_counts_as_it_exits(tmp_path: Path) -> None:
    script = (
        "from prometheus_client import Counter;"
        "from observability import multiproc;"
        "c = Counter('runyard_exit', 'h', ['tenant']); c.labels('t').inc(5);"
        "multiproc.on_worker_exit()"
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", script], cwd=root, env=env, check=True, timeout=60)
    assert [f.name for f in tmp_path.glob("*.db")] == ["counter_archive.db"]
    assert samples(tmp_path)[("runyard_exit_total", (("tenant", "t"),))] == 5
