from django.core.management.base import BaseCommand

from bots.management.commands._bot_option import add_bot_argument, chosen_bot
from bots.telegram_api import call


class Command(BaseCommand):
    help = "Stop Telegram from sending a bot's updates to the webhook."

    def add_arguments(self, parser):
        add_bot_argument(parser)
        parser.add_argument("--drop-pending", action="store_true", help="Discard updates Telegram still holds.")

    def handle(self, *args, **options):
        bot = chosen_bot(options)
        call(bot, "delete_webhook", drop_pending_updates=options["drop_pending"])
        self.stdout.write(self.style.SUCCESS(f"Webhook of {bot} deleted"))
