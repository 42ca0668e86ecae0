from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from bots.management.commands._bot_option import add_bot_argument, chosen_bot
from bots.models import Bot
from bots.telegram_api import call


class Command(BaseCommand):
    help = "Point Telegram at this platform's webhook for a bot (generates the secret if it has none)."

    def add_arguments(self, parser):
        add_bot_argument(parser)
        parser.add_argument("--url", help="Public base URL (default: PUBLIC_URL), e.g. https://bot.example.org")
        parser.add_argument("--drop-pending", action="store_true", help="Discard updates Telegram still holds.")

    def handle(self, *args, **options):
        bot = chosen_bot(options)
        base = (options["url"] or settings.PUBLIC_URL).rstrip("/")
        if not base.startswith("https://") and not base.startswith("http://"):
            raise CommandError("Give the public URL with --url https://... or set PUBLIC_URL.")
        if not bot.webhook_secret:
            bot.webhook_secret = Bot.new_secret()
            bot.save(update_fields=["webhook_secret"])
        url = base + bot.webhook_path()
        call(
            bot,
            "set_webhook",
            url=url,
            secret_token=bot.webhook_secret,
            drop_pending_updates=options["drop_pending"],
            allowed_updates=["message", "edited_message", "channel_post", "callback_query", "my_chat_member"],
        )
        self.stdout.write(self.style.SUCCESS(f"Webhook of {bot} set to {url}"))
