from django.conf import settings
from django.core.management.base import BaseCommand

from bots.models import Bot


class Command(BaseCommand):
    help = "Print each active bot's webhook URL, on this server and at PUBLIC_URL (what `make run` shows)."

    def add_arguments(self, parser):
        parser.add_argument("--base", default="http://127.0.0.1:8000", help="Where the web process listens.")

    def handle(self, *args, **options):
        bases = [options["base"].rstrip("/")]
        if settings.PUBLIC_URL:
            bases.append(settings.PUBLIC_URL.rstrip("/"))
        bots = list(Bot.objects.filter(is_active=True).order_by("pk"))
        if not bots:
            self.stdout.write(
                "Webhook:  no bot yet: put TELEGRAM_BOT_TOKEN in .env (then `make run` again) or add one in the admin"
            )
        for bot in bots:
            urls = "  ".join(base + bot.webhook_path() for base in bases)
            self.stdout.write(f"Webhook:  {urls}   ({bot})")
