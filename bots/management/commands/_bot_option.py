"""The --bot option every bot command shares."""

from django.core.management.base import CommandError

from bots.models import Bot


def add_bot_argument(parser) -> None:
    parser.add_argument("--bot", type=int, help="The bot's numeric id (digits before the token's colon).")


def chosen_bot(options: dict) -> Bot:
    Bot.objects.sync_from_settings()
    bots = Bot.objects.filter(is_active=True)
    if options.get("bot"):
        bots = bots.filter(telegram_id=options["bot"])
    found = list(bots[:2])
    if not found:
        raise CommandError("No such active bot. Set TELEGRAM_BOT_TOKEN or add a bot in the admin.")
    if len(found) > 1:
        raise CommandError("Several bots are active: choose one with --bot <id>.")
    return found[0]
