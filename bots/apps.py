from django.apps import AppConfig
from django.db.models.signals import post_migrate


class BotsConfig(AppConfig):
    name = "bots"
    verbose_name = "Telegram bots"

    def ready(self) -> None:
        from bots.signals import sync_settings_bot

        post_migrate.connect(sync_settings_bot, sender=self)
