"""Dashboard URLs (namespace `runs`), mounted at the site root by config/urls.py."""

from django.contrib.auth import views as auth_views
from django.urls import path

from runs import views

app_name = "runs"

urlpatterns = [
    path(
        "login/",
        auth_views.LoginView.as_view(redirect_authenticated_user=True),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", views.run_list, name="home"),
    path("runs/", views.run_list, name="list"),
    path("runs/<uuid:run_id>/", views.run_detail, name="detail"),
    path("runs/<uuid:run_id>/live/", views.run_live, name="live"),
    path("runs/<uuid:run_id>/steps/", views.node_step, name="node_step"),
    path("runs/<uuid:run_id>/steps/<int:index>/", views.step_detail, name="step"),
    path("runs/<uuid:run_id>/<str:action>/", views.run_control, name="control"),
    path("artifacts/<uuid:artifact_id>/", views.artifact_download, name="artifact"),
    path("graphs/", views.graph_list, name="graphs"),
    path("graphs/<path:name>/", views.graph_detail, name="graph"),
    path("usage/", views.usage, name="usage"),
    path("overview/", views.overview, name="overview"),
    path("tenant/", views.switch_tenant, name="switch_tenant"),
]
