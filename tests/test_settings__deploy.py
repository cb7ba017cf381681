"""Production defaults are safe: check --deploy refuses the public key and DEBUG, hosts are local
names unless widened, `make run` gets a key of its own and binds 127.0.0.1 unless told."""

from __future__ import annotations

import os
import runpy
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.checks import ERROR, run_checks
from django.test import Client, override_settings

ROOT = Path(settings.BASE_DIR)
SETTINGS_FILE = ROOT / "config" / "settings.py"
REAL_KEY = "k" * 20 + "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJ"
ENV_NAMES = ("SECRET_KEY", "DEBUG", "ALLOWED_HOSTS", "RUNYARD_BIND")


def deploy_errors() -> dict[str, int]:
    return {
        m.id: m.level
        for m in run_checks(include_deployment_checks=True)
        if m.id and m.id.startswith("runs.")
    }


def load_settings(monkeypatch: pytest.MonkeyPatch, var_dir: Path, **env: str) -> dict[str, Any]:
    """config/settings.py evaluated afresh under `env` (the rest of the environment cleared of
    the names it reads), as a new process would see it."""
    for name in (*ENV_NAMES, "DATABASE_URL", "SQLITE_PATH", "RUNYARD_LEASE_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RUNYARD_VAR_DIR", str(var_dir))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(SETTINGS_FILE))


def test_deploy_check_is_an_error_for_the_development_secret_key() -> None:
    with override_settings(SECRET_KEY=settings.DEV_SECRET_KEY, DEBUG=False):
        assert deploy_errors().get("runs.E011") == ERROR
    with override_settings(SECRET_KEY="change-me", DEBUG=False):
        assert deploy_errors().get("runs.E011") == ERROR


def test_deploy_check_is_an_error_when_debug_is_on() -> None:
    with override_settings(SECRET_KEY=REAL_KEY, DEBUG=True):
        errors = deploy_errors()
    assert errors.get("runs.E012") == ERROR
    assert "runs.E011" not in errors


def test_deploy_check_passes_a_real_key_with_debug_off() -> None:
    with override_settings(SECRET_KEY=REAL_KEY, DEBUG=False):
        errors = deploy_errors()
    assert "runs.E011" not in errors and "runs.E012" not in errors


def test_plain_checks_leave_secrets_to_deploy_checks() -> None:
    # Workers run the plain checks at start; a development machine must still start.
    with override_settings(SECRET_KEY=settings.DEV_SECRET_KEY, DEBUG=True):
        ids = [m.id for m in run_checks()]
    assert "runs.E011" not in ids and "runs.E012" not in ids


def test_manage_check_deploy_fails_on_a_fresh_machine_and_passes_with_a_key(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ENV_NAMES and "PYTEST" not in k}
    env["RUNYARD_VAR_DIR"] = str(tmp_path)  # no var/secret_key here
    cmd = [sys.executable, "manage.py", "check", "--deploy"]
    fresh = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert fresh.returncode != 0
    assert "runs.E011" in fresh.stderr
    keyed = subprocess.run(
        cmd, cwd=ROOT, env={**env, "SECRET_KEY": REAL_KEY}, capture_output=True, text=True
    )
    assert keyed.returncode == 0, keyed.stderr
    assert "runs.E0" not in keyed.stderr + keyed.stdout


def test_secret_key_comes_from_the_environment_then_var_then_the_dev_value(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert load_settings(monkeypatch, tmp_path)["SECRET_KEY"] == settings.DEV_SECRET_KEY
    (tmp_path / "secret_key").write_text("from-the-file-" + "x" * 40 + "\n")
    assert load_settings(monkeypatch, tmp_path)["SECRET_KEY"] == "from-the-file-" + "x" * 40
    assert load_settings(monkeypatch, tmp_path, SECRET_KEY=REAL_KEY)["SECRET_KEY"] == REAL_KEY


def test_make_writes_a_private_random_secret_key_once(tmp_path: Path) -> None:
    def make() -> str:
        subprocess.run(
            ["make", "-s", f"{tmp_path}/secret_key", f"RUNYARD_VAR_DIR={tmp_path}"],
            cwd=ROOT,
            check=True,
            timeout=60,
        )
        return (tmp_path / "secret_key").read_text().strip()

    key = make()
    assert len(key) >= 50 and key != settings.DEV_SECRET_KEY
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0
    assert make() == key  # kept: sessions and signed values survive the next `make run`


def test_allowed_hosts_default_to_local_names(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert load_settings(monkeypatch, tmp_path)["ALLOWED_HOSTS"] == [
        "localhost",
        "127.0.0.1",
        "[::1]",
    ]
    widened = load_settings(monkeypatch, tmp_path, ALLOWED_HOSTS="runyard.example.com, x.org")
    assert widened["ALLOWED_HOSTS"] == ["runyard.example.com", "x.org"]
    assert load_settings(monkeypatch, tmp_path)["DEBUG"] is False


def test_requests_for_other_hosts_are_refused() -> None:
    # The test runner adds "testserver" to the defaults; other names are a 400.
    assert Client().get("/healthz").status_code == 200
    assert Client(HTTP_HOST="localhost:8000").get("/healthz").status_code == 200
    assert Client(HTTP_HOST="127.0.0.1:8000").get("/healthz").status_code == 200
    assert Client(HTTP_HOST="evil.example.com").get("/healthz").status_code == 400


def procfile_web(**env: str) -> list[str]:
    """The web line of platform/Procfile as the shell that honcho starts expands it."""
    line = next(
        line.split(":", 1)[1].strip()
        for line in (ROOT / "platform" / "Procfile").read_text().splitlines()
        if line.startswith("web:")
    )
    clean = {k: v for k, v in os.environ.items() if k != "RUNYARD_BIND"}
    out = subprocess.run(
        ["sh", "-c", f"printf '%s\\n' {line}"],
        env={**clean, "PORT": "8123", **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert shlex.split(line)[0].endswith("daphne")
    return out


def bind_of(args: list[str]) -> str:
    return args[args.index("-b") + 1]


def test_procfile_binds_loopback_unless_runyard_bind_widens_it() -> None:
    assert bind_of(procfile_web()) == "127.0.0.1"
    assert bind_of(procfile_web(RUNYARD_BIND="0.0.0.0")) == "0.0.0.0"  # noqa: S104
    assert procfile_web()[procfile_web().index("-p") + 1] == "8123"


@pytest.mark.parametrize(
    "name",
    [
        "RUNYARD_BIND",
        "ALLOWED_HOSTS",
        "SECRET_KEY",
        "RUNYARD_SQLITE_BUSY_TIMEOUT",
        "RUNYARD_PRUNE_BATCH_RUNS",
        "RUNYARD_PRUNE_BATCH_ROWS",
    ],
)
def test_safety_settings_are_documented(name: str) -> None:
    assert name in (ROOT / "platform" / "env.example").read_text()
    assert f"`{name}`" in (ROOT / "README.md").read_text()
