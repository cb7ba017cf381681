"""Dashboard URLs of schedules (namespace `schedules`), mounted at /schedules/."""

from django.urls import path

from schedules import views

app_name = "schedules"

urlpatterns = [
    path("", views.cron_list, name="list"),
    path("<uuid:cron_id>/toggle/", views.cron_toggle, name="toggle"),
    path("<uuid:cron_id>/delete/", views.cron_delete, name="delete"),
]
