from django.apps import AppConfig


class ProjectConfig(AppConfig):
    """The project's own checks (config/checks.py); no models."""

    name = "config"
    verbose_name = "Configuration"

    def ready(self) -> None:
        from config import checks  # noqa: F401  (registers the checks)
