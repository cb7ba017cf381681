from django.contrib import admin
from django.http import HttpRequest, HttpResponsePermanentRedirect
from django.templatetags.static import static
from django.urls import include, path

from config import health
from config.api import api
from lg.api import api as lg_api
from observability.views import metrics


def favicon(request: HttpRequest) -> HttpResponsePermanentRedirect:
    """Browsers ask every site for /favicon.ico (the admin's pages name no icon): a 404 there
    would be an error on every page."""
    return HttpResponsePermanentRedirect(static("runs/favicon.png"))


urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics, name="metrics"),
    path("favicon.ico", favicon),
    path("admin/", admin.site.urls),
    path("api/v1/", api.urls),
    path("schedules/", include("schedules.urls")),
    path("webhooks/", include("webhooks.urls")),
    path("lg/", lg_api.urls),
    path("", include("runs.urls")),
]

# DEBUG off (the shipped configuration) renders templates/404.html and 500.html through
# Django's default handlers: the 500 one with no request context (tests/test_error_pages.py).
