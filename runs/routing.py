"""Websocket routes; the consumers document their protocol and close codes."""

from django.urls import path

from runs.consumers import RunStreamConsumer, TenantStreamConsumer

websocket_urlpatterns = [
    path("ws/runs/<str:run_id>/", RunStreamConsumer.as_asgi()),
    path("ws/tenant/", TenantStreamConsumer.as_asgi()),
]
