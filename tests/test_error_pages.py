"""The shipped configuration (DEBUG off) answers unknown pages and crashes with the dashboard's
own styled 404 and 500 pages, and serves static files from the web process itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string
from django.test import Client
from django.urls import include, path
from django.views.defaults import server_error


def boom(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("a bug in a view")


urlpatterns = [path("boom/", boom), path("", include("config.urls"))]


@pytest.mark.django_db
@pytest.mark.parametrize("logged_in", [False, True])
def test_an_unknown_page_is_the_styled_404(logged_in: bool, member: Any) -> None:
    client = Client()
    if logged_in:
        client.force_login(member)
    response = client.get("/no/such/page/")
    assert response.status_code == 404
    html = response.content.decode()
    assert 'id="error-404"' in html and "There is nothing at this address" in html
    assert "<code>/no/such/page/</code>" in html
    assert 'class="topbar"' in html and "--accent" in html  # the dashboard's chrome and CSS
    assert (member.username in html) is logged_in


@pytest.mark.django_db
def test_the_404_escapes_the_path() -> None:
    html = Client().get("/<script>alert(1)</script>/").content.decode()
    assert "<script>alert(1)" not in html and "%3Cscript%3E" in html


@pytest.mark.django_db
@pytest.mark.urls("tests.test_error_pages")
def test_a_crashing_view_is_the_styled_500(caplog: Any) -> None:
    response = Client(raise_request_exception=False).get("/boom/")
    assert response.status_code == 500
    html = response.content.decode()
    assert 'id="error-500"' in html and "Something went wrong on our side" in html
    assert 'class="topbar"' in html and "--accent" in html
    assert "a bug in a view" not in html  # nothing of the exception reaches the page


def test_the_500_renders_without_a_request_context() -> None:
    # What Django's server_error does: no request, no user, no database.
    html = render_to_string("500.html")
    assert 'id="error-500"' in html
    response = server_error(HttpRequest())
    assert response.status_code == 500 and b"error-500" in response.content


@pytest.mark.django_db
def test_static_files_are_served_with_debug_off(settings: Any, tmp_path: Path) -> None:
    assert settings.DEBUG is False
    css = tmp_path / "admin" / "css" / "base.css"
    css.parent.mkdir(parents=True)
    css.write_text("body { color: red; }")
    settings.STATIC_ROOT = tmp_path
    client = Client()  # loads the middleware, which indexes STATIC_ROOT, anew
    response = client.get("/static/admin/css/base.css")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/css")
    assert response["Content-Length"] == str(len("body { color: red; }"))
    assert client.get("/static/admin/css/missing.css").status_code == 404


@pytest.mark.django_db
def test_the_favicon_is_found() -> None:
    response = Client().get("/favicon.ico")
    assert response.status_code == 301 and response["Location"] == "/static/runs/favicon.png"
