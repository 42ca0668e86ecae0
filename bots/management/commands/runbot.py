import json
import time

import telegram
from django.core.management.base import BaseCommand, CommandError

from bots.inbox import accept_update
from bots.management.commands._bot_option import add_bot_argument, chosen_bot
from bots.telegram_api import call


class Command(BaseCommand):
    help = (
        "Development without a public URL: long-poll getUpdates and feed the same inbox and "
        "queue as the webhook. Deletes the bot's webhook first (Telegram allows one or the other)."
    )

    def add_arguments(self, parser):
        add_bot_argument(parser)
        parser.add_argument("--polling", action="store_true", required=True, help="Use getUpdates.")
        parser.add_argument("--timeout", type=int, default=25, help="Long-poll timeout in seconds.")

    def handle(self, *args, **options):
        bot = chosen_bot(options)
        call(bot, "delete_webhook")
        self.stdout.write(f"Polling {bot}; Ctrl-C stops.")
        offset = None
        try:
            while True:
                try:
                    updates = call(bot, "get_updates", offset=offset, timeout=options["timeout"])
                except telegram.error.InvalidToken as exc:
                    raise CommandError(f"Telegram rejected the token of {bot}") from exc
                except telegram.error.NetworkError as exc:
                    self.stderr.write(f"getUpdates failed ({exc}); trying again in 3 s")
                    time.sleep(3)
                    continue
                for update in updates:
                    accept_update(bot.pk, json.dumps(update.to_dict()))
                    offset = update.update_id + 1
        except KeyboardInterrupt:
            self.stdout.write("Stopped.")
