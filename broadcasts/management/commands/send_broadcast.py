import argparse
import re
import sys
from datetime import time
from typing import TextIO
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.core.validators import URLValidator
from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from bots.management.commands._bot_option import add_bot_argument, chosen_bot
from broadcasts import controls
from broadcasts.audiences import refusal
from broadcasts.management.commands._control import add_user_argument, history_user
from broadcasts.models import Audience, Broadcast, MessageTemplate, MessageVersion, ParseMode
from broadcasts.personalize import unknown_hashtags
from broadcasts.summary import SendSummary, send_summary
from broadcasts.window import BadZone

# The Bot API's allow_paid_broadcast: "up to 1000 messages per second, ignoring broadcasting
# limits for a fee of 0.1 Telegram Stars per message", withdrawn from the bot's balance.
STARS_PER_PAID_MESSAGE = 0.1


def button(value: str) -> dict[str, str]:
    """--button "Pay now=https://example.org/pay" -> {"text": "Pay now", "url": "https://..."}."""
    text, equals, url = (part.strip() for part in value.partition("="))
    if not equals or not text or not url:
        raise argparse.ArgumentTypeError(f'{value!r}: write TEXT=URL, e.g. "Pay now=https://example.org/pay".')
    if not _is_button_url(url):
        raise argparse.ArgumentTypeError(f"{url!r} is not an http://, https:// or tg:// link.")
    return {"text": text, "url": url}


def window(value: str) -> tuple[time, time]:
    """--window 09:00-20:00 -> (09:00, 20:00); 22:00-06:00 crosses midnight."""
    found = re.fullmatch(r"(\d{1,2}):(\d{2})(?::(\d{2}))?-(\d{1,2}):(\d{2})(?::(\d{2}))?", value.strip())
    try:
        if found is None:
            raise ValueError
        h1, m1, s1, h2, m2, s2 = (int(part or 0) for part in found.groups())
        return time(h1, m1, s1), time(h2, m2, s2)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r}: write START-END in 24-hour time, e.g. 09:00-20:00.") from None


def _is_button_url(url: str) -> bool:
    if url.startswith("tg://"):
        return bool(urlsplit(url).netloc)
    try:
        URLValidator(schemes=["http", "https"])(url)
    except ValidationError:
        return False
    return True


LANGUAGE_CODE = re.compile(r"[a-z]{2,3}(-[a-z0-9]{1,8})*")


def language_text(value: str) -> tuple[str, str]:
    """--language "fr=Bonjour #first_name" -> ("fr", "Bonjour #first_name")."""
    code, equals, text = value.partition("=")
    code, text = code.strip().lower(), text.strip()
    if not equals or not text:
        raise argparse.ArgumentTypeError(f'{value!r}: write CODE=TEXT, e.g. "fr=Bonjour #first_name".')
    if not LANGUAGE_CODE.fullmatch(code):
        raise argparse.ArgumentTypeError(f"{code!r} is not a language code such as fr, pt or pt-br.")
    return code, text


def variant_text(value: str) -> str:
    if not value.strip():
        raise argparse.ArgumentTypeError("A --variant-text cannot be empty.")
    return value


class Command(BaseCommand):
    help = (
        "Create a broadcast and send it now, or schedule it with --at. Shows who gets it and asks "
        "first (--yes does not ask; --dry-run only shows). Prints the broadcast's id."
    )
    stealth_options = ("stdin",)

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
        parser.add_argument(
            "--button",
            action="append",
            type=button,
            default=[],
            metavar="TEXT=URL",
            help="A URL button under the message (http, https or tg link); repeat for more.",
        )
        # A/B tests and languages (broadcasts.variants).
        parser.add_argument(
            "--variant-text",
            action="append",
            type=variant_text,
            default=[],
            metavar="TEXT",
            help="Another version of the text for an A/B test: arms B, C, D, in order; the audience is "
            f"split evenly between them and --text (A). At most {len(MessageVersion.ARMS) - 1}.",
        )
        parser.add_argument(
            "--language",
            action="append",
            type=language_text,
            default=[],
            metavar="CODE=TEXT",
            help="The text for members whose Telegram language is CODE (fr, pt-br; pt also matches pt-br); "
            "the others get --text. Repeat for more languages.",
        )
        parser.add_argument(
            "--window",
            type=window,
            metavar="START-END",
            help="Send only between these times of day, e.g. 09:00-20:00 (22:00-06:00 crosses midnight); "
            "outside them sending waits, and resumes on its own.",
        )
        parser.add_argument(
            "--timezone",
            default="",
            metavar="ZONE",
            help="The time zone of --window, e.g. Africa/Addis_Ababa (default: the server's TIME_ZONE).",
        )
        parser.add_argument(
            "--paid",
            action="store_true",
            help="A paid broadcast (allow_paid_broadcast): up to TELEGRAM_PAID_RATE_LIMIT messages/s instead of "
            f"30, for {STARS_PER_PAID_MESSAGE:g} Telegram Stars per message from the bot's balance.",
        )
        parser.add_argument(
            "--approved-by",
            metavar="USERNAME",
            help="With BROADCAST_APPROVAL on: the operator who approved this message (they must hold the "
            "send_broadcast permission and not be --user). Without it, nothing is sent.",
        )
        add_user_argument(parser)
        parser.add_argument(
            "--dry-run", action="store_true", help="Show who would get it and how it reads; create and send nothing."
        )
        parser.add_argument("--yes", action="store_true", help="Do not ask for confirmation.")
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
            buttons=options["button"],
            window_timezone=options["timezone"],
            allow_paid_broadcast=options["paid"],
        )
        if options["window"]:
            broadcast.window_start, broadcast.window_end = options["window"]
        elif options["timezone"]:
            raise CommandError("--timezone is the time zone of --window: give --window too.")
        self._check_window(broadcast)
        user = history_user(options)
        approver = self._approver(options["approved_by"], user)
        if broadcast.audience == Audience.HAND_PICKED:
            raise CommandError("Hand-picked audiences are chosen in the admin.")
        refused = refusal(broadcast)
        if refused:
            raise CommandError(f"{refused} Nothing was created.")
        for tag in unknown_hashtags(broadcast.body):
            self.stderr.write(self.style.WARNING(f"{tag} is not a placeholder; it is sent as written."))
        versions = self._versions(broadcast, options["variant_text"], options["language"])
        summary = send_summary(broadcast, [(v.arm, v.language) for v in versions])
        lines = summary.lines() + self._window_lines(broadcast) + self._cost_lines(broadcast, summary)
        if options["dry_run"]:
            self.stdout.write("\n".join(lines))
            self.stderr.write("Dry run: nothing was created or sent.")
            return
        self.stderr.write("\n".join(lines))
        if not options["yes"]:
            self._confirm(broadcast, summary, options.get("stdin", sys.stdin))
        try:
            with transaction.atomic():
                broadcast.created_by = broadcast.edited_by = user
                broadcast.save()
                for version in versions:
                    version.broadcast = broadcast
                MessageVersion.objects.bulk_create(versions)
                controls.composed(broadcast, user)
                if approver:
                    controls.approve(broadcast, approver)
                if broadcast.scheduled_at:
                    controls.schedule(broadcast, user)
                else:
                    controls.send(broadcast, user)
        except controls.Refused as refused:
            raise CommandError(f"{refused} Nothing was created.") from None
        if broadcast.scheduled_at:
            self.stderr.write(f"Scheduled for {broadcast.scheduled_at.isoformat()}.")
        else:
            self.stderr.write("Sending has started; follow it with: manage.py broadcast_status " + str(broadcast.pk))
        self.stdout.write(str(broadcast.pk))

    def _cost_lines(self, broadcast: Broadcast, summary: SendSummary) -> list[str]:
        if not broadcast.allow_paid_broadcast:
            return []
        stars = summary.recipients * STARS_PER_PAID_MESSAGE
        return [
            f"Paid broadcast: Telegram charges {STARS_PER_PAID_MESSAGE:g} Stars per message, up to {stars:,.1f} "
            f"Stars for {summary.recipients} recipients, withdrawn from the bot's Stars balance."
        ]

    def _window_lines(self, broadcast: Broadcast) -> list[str]:
        window = broadcast.send_window
        if window is None:
            return []
        now = timezone.now()
        closed = f"; {window.closed_reason(now)}" if not window.contains(now) else ""
        return [f"Send window: {window.describe()}{closed}"]

    def _check_window(self, broadcast: Broadcast) -> None:
        try:
            broadcast.send_window  # noqa: B018
        except BadZone as exc:
            raise CommandError(f"--timezone: {exc}") from None
        except ValueError as exc:
            raise CommandError(f"--window: {exc}") from None

    def _approver(self, name: str | None, user):
        """The --approved-by user, checked as the admin's Approve button checks its user; a
        refusal before anything is created when approval is needed and not given."""
        if not settings.BROADCAST_APPROVAL:
            if name:
                raise CommandError("--approved-by: approval is off (BROADCAST_APPROVAL); leave it out.")
            return None
        if not name:
            raise CommandError(
                "Not sent: BROADCAST_APPROVAL is on, so another operator approves a broadcast before it is "
                "sent. Give --approved-by USERNAME of the operator who approved this message, or compose it in "
                "the admin for approval there. Nothing was created."
            )
        approver = get_user_model().objects.filter(username=name).first()
        if approver is None:
            raise CommandError(f"--approved-by: no user named {name!r}. Nothing was created.")
        refused = controls.approver_refusal(Broadcast(created_by=user, edited_by=user), approver)
        if refused:
            raise CommandError(f"--approved-by: {refused} Nothing was created.")
        return approver

    def _versions(self, broadcast: Broadcast, texts: list[str], languages: list[tuple[str, str]]) -> list:
        """Arms B-D from --variant-text, and arm A's language versions from --language."""
        if len(texts) >= len(MessageVersion.ARMS):
            raise CommandError(
                f"{len(texts) + 1} A/B arms: at most {len(MessageVersion.ARMS)} (--text and "
                f"{len(MessageVersion.ARMS) - 1} --variant-text). Nothing was created."
            )
        codes = [code for code, _ in languages]
        if repeated := sorted({code for code in codes if codes.count(code) > 1}):
            raise CommandError(f"--language {', '.join(repeated)} given twice. Nothing was created.")
        versions = [MessageVersion(arm=MessageVersion.ARMS[i], text=text) for i, text in enumerate(texts, 1)]
        versions += [MessageVersion(arm="A", language=code, text=text) for code, text in languages]
        for version in versions:
            option = f"--language {version.language}" if version.language else f"--variant-text ({version.arm})"
            for tag in unknown_hashtags(version.text):
                self.stderr.write(self.style.WARNING(f"{option}: {tag} is not a placeholder; it is sent as written."))
        if versions and broadcast.template_id and not broadcast.text:
            self.stderr.write(f"Arm A and the fallback are the template {broadcast.template}.")
        return versions

    def _confirm(self, broadcast: Broadcast, summary: SendSummary, stdin: TextIO) -> None:
        if not stdin.isatty():
            raise CommandError(
                "Not sent: nobody can confirm on a non-interactive input. Add --yes to send without "
                "asking, or --dry-run to see the summary only. Nothing was created."
            )
        when = f"on {broadcast.scheduled_at.isoformat()}" if broadcast.scheduled_at else "now"
        self.stderr.write(f"Send to {summary.recipients} recipients {when}? [y/N] ", ending="")
        self.stderr.flush()
        if stdin.readline().strip().lower() not in ("y", "yes"):
            raise CommandError("Not sent. Nothing was created.")

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
