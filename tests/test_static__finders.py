"""The web process serves static files even where `collectstatic` never ran."""

from __future__ import annotations

from pathlib import Path

from django.test import Client, override_settings


def test_static_files_are_served_with_an_empty_static_root(tmp_path: Path) -> None:
    with override_settings(STATIC_ROOT=tmp_path, DEBUG=False):
        client = Client()  # a new handler: the middleware reads the settings above
        for path in (
            "/static/admin/css/base.css",
            "/static/ninja/swagger-ui-bundle.js",
            "/static/runs/inspector.js",
        ):
            response = client.get(path)
            assert response.status_code == 200, path
            assert int(response["Content-Length"]) > 0
    assert not any(tmp_path.iterdir())  # nothing was collected
