"""The browser and e2e tests start the web process from platform/Procfile's own line."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.processes import ROOT, procfile_command


def test_the_web_line_is_expanded_like_the_shell_would() -> None:
    argv = procfile_command("web", {"PORT": "18001"})
    assert argv == [
        str(ROOT / ".venv/bin/daphne"),
        "-b",
        "127.0.0.1",
        "-p",
        "18001",
        "config.asgi:application",
    ]
    assert procfile_command("web", {"PORT": "1", "RUNYARD_BIND": "10.0.0.5"})[2] == "10.0.0.5"


def test_expansion_forms_and_unknown_names(tmp_path: Path) -> None:
    procfile = tmp_path / "Procfile"
    procfile.write_text("# comment\nweb: exec run ${A} $B ${C:-dflt} ${D:-x}\n")
    assert procfile_command("web", {"A": "1", "B": "2", "D": "4"}, procfile) == [
        "run",
        "1",
        "2",
        "dflt",
        "4",
    ]
    with pytest.raises(LookupError):
        procfile_command("worker", {}, procfile)
