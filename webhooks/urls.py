"""Dashboard URLs (namespace `webhooks`), mounted at /webhooks/ by config/urls.py."""

from django.urls import path

from webhooks import views

app_name = "webhooks"

urlpatterns = [
    path("", views.webhook_list, name="list"),
    path("secret/", views.secret_rotate, name="secret"),
    path("<uuid:webhook_id>/delete/", views.webhook_delete, name="delete"),
]
