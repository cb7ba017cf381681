from django.apps import AppConfig


class LgConfig(AppConfig):
    name = "lg"
    verbose_name = "LangGraph protocol"
    default_auto_field = "django.db.models.BigAutoField"
