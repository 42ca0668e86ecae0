from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from bots.management.commands._bot_option import add_bot_argument, chosen_bot
from broadcasts.audiences import refusal
from broadcasts.models import Audience, Broadcast, MessageTemplate, ParseMode
from broadcasts.personalize import unknown_hashtags
from broadcasts.tasks import start_broadcast


class Command(BaseCommand):
    help = "Create a broadcast and send it now, or schedule it with --at. Prints the broadcast's id."

    def add_arguments(self, parser):
        message = parser.add_mutually_exclusive_group(required=True)
        message.add_argument("--text", help="The text, with placeholders such as #first_name and #balance.")
        message.add_argument("--template", help="The name of a message template.")
        parser.add_argument(
            "--audience",
            default=Audience.SUBSCRIBERS,
            help=f"One of {', '.join(Audience.values)} (default subscribers).",
        )
        parser.add_argument("--audience-value", default="", help="The campaign or language code, for those audiences.")
        parser.add_argument("--at", help="Send at this time instead of now (ISO 8601, e.g. 2026-03-01T09:00+01:00).")
        parser.add_argument(
            "--parse-mode",
            default="",
            help=f"One of {', '.join(m for m in ParseMode.values if m)} (default: plain text).",
        )
        parser.add_argument("--title", default="", help="A title for operators.")
        add_bot_argument(parser)

    def handle(self, *args, **options):
        broadcast = Broadcast(
            bot=chosen_bot(options),
            title=options["title"],
            text=options["text"] or "",
            template=self._template(options["template"]),
            parse_mode=self._parse_mode(options["parse_mode"]),
            audience=self._audience(options["audience"], options["audience_value"]),
            audience_value=options["audience_value"],
            scheduled_at=self._when(options["at"]),
        )
        if broadcast.audience == Audience.HAND_PICKED:
            raise CommandError("Hand-picked audiences are chosen in the admin.")
        refused = refusal(broadcast)
        if refused:
            raise CommandError(f"{refused} Nothing was created.")
        for tag in unknown_hashtags(broadcast.body):
            self.stderr.write(self.style.WARNING(f"{tag} is not a placeholder; it is sent as written."))
        broadcast.save()
        if broadcast.scheduled_at:
            broadcast.schedule()
            self.stderr.write(f"Scheduled for {broadcast.scheduled_at.isoformat()}.")
        else:
            start_broadcast.enqueue_with(args=[broadcast.pk], label=f"broadcast {broadcast.pk}: start")
            self.stderr.write("Sending has started; follow it with: manage.py broadcast_status " + str(broadcast.pk))
        self.stdout.write(str(broadcast.pk))

    def _template(self, name: str | None) -> MessageTemplate | None:
        if name is None:
            return None
        try:
            return MessageTemplate.objects.get(name=name)
        except MessageTemplate.DoesNotExist:
            known = ", ".join(MessageTemplate.objects.order_by("name").values_list("name", flat=True)[:20])
            raise CommandError(f"No message template named {name!r}. Known: {known or 'none yet'}.") from None

    def _parse_mode(self, mode: str) -> str:
        by_lower = {m.lower(): m for m in ParseMode.values}
        if mode.lower() not in by_lower:
            raise CommandError(f"Unknown parse mode {mode!r}: use HTML or MarkdownV2, or leave it out for plain text.")
        return by_lower[mode.lower()]

    def _audience(self, audience: str, value: str) -> str:
        if audience not in Audience.values:
            raise CommandError(f"Unknown audience {audience!r}. Valid audiences: {', '.join(Audience.values)}.")
        if audience in (Audience.CAMPAIGN, Audience.LANGUAGE) and not value:
            raise CommandError(f"The {audience} audience needs --audience-value.")
        return audience

    def _when(self, at: str | None):
        if at is None:
            return None
        try:
            when = parse_datetime(at)
        except ValueError:
            when = None
        if when is None:
            raise CommandError(f"--at {at!r} is not an ISO 8601 date and time, e.g. 2026-03-01T09:00+01:00.")
        if timezone.is_naive(when):
            when = timezone.make_aware(when)
        if when <= timezone.now():
            raise CommandError(f"--at {at} is in the past.")
        return when
