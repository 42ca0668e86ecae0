from bots.models import Bot


def sync_settings_bot(sender, **kwargs) -> None:
    """After every migrate: the bot of TELEGRAM_BOT_TOKEN exists and is current."""
    Bot.objects.sync_from_settings()
