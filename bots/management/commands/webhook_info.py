from django.core.management.base import BaseCommand

from bots.management.commands._bot_option import add_bot_argument, chosen_bot
from bots.telegram_api import call


class Command(BaseCommand):
    help = "Show what Telegram knows about a bot's webhook: URL, pending updates, last error."

    def add_arguments(self, parser):
        add_bot_argument(parser)

    def handle(self, *args, **options):
        bot = chosen_bot(options)
        info = call(bot, "get_webhook_info")
        self.stdout.write(f"Bot:              {bot} ({bot.masked_token})")
        self.stdout.write(f"URL:              {info.url or '(none)'}")
        self.stdout.write(f"Pending updates:  {info.pending_update_count}")
        self.stdout.write(f"Max connections:  {info.max_connections}")
        if info.last_error_date:
            self.stdout.write(f"Last error:       {info.last_error_date:%Y-%m-%d %H:%M:%S} {info.last_error_message}")
