"""What sending a broadcast now would do, for the operator to confirm first: who gets it (by
language), who the audience leaves out and why, how long it takes at the bot's rate, and the
message as its first recipient gets it. The admin's confirmation page and `send_broadcast`
show this same summary."""

from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db.models import Count, Exists, OuterRef, Prefetch, Q

from bots.models import TelegramUser
from broadcasts.audiences import audience_members, recipients
from broadcasts.models import ABMeasure, Broadcast, ParseMode, Pledge
from broadcasts.personalize import needs_pledge, render
from broadcasts.variants import Split, Version, version_for

TEST_MARK = {ParseMode.MARKDOWN_V2: r"\[TEST\]"}


@dataclass
class SendSummary:
    audience: str
    recipients: int
    by_language: list[tuple[str, int]]
    blocked: int
    opted_out: int
    never_subscribed: int
    needs_pledge: bool
    without_pledge: int
    fallback: str
    rate: float
    paid: bool
    first_member: TelegramUser | None
    first_text: str
    buttons: list[dict]
    attachment: str
    # A/B arms and message languages (broadcasts.variants): ('', n) are held for the winner,
    # and get the fallback, respectively.
    by_arm: list[tuple[str, int]]
    by_message_language: list[tuple[str, int]]
    ab_test: str

    @property
    def left_out(self) -> int:
        return self.blocked + self.opted_out + self.never_subscribed

    @property
    def duration(self) -> str:
        return duration_in_words(self.recipients / self.rate)

    def lines(self) -> list[str]:
        """The summary as text, for the command line."""
        languages = ", ".join(f"{code or 'unknown'} {n}" for code, n in self.by_language) or "-"
        lines = [
            f"Audience: {self.audience}: {self.recipients} recipients",
            f"  by language: {languages}",
            f"Left out: {self.blocked} blocked the bot, {self.opted_out} opted out, "
            f"{self.never_subscribed} never subscribed",
        ]
        if self.needs_pledge:
            lines.append(
                f"Without pledge data: {self.without_pledge} (they see “{self.fallback}” for pledge placeholders)"
            )
        if len(self.by_arm) > 1:
            arms = ", ".join(f"{arm} {n}" if arm else f"{n} held for the winner" for arm, n in self.by_arm)
            lines.append(f"{self.ab_test}: {arms}")
        if len(self.by_message_language) > 1:
            versions = ", ".join(f"{code or 'fallback'} {n}" for code, n in self.by_message_language)
            lines.append(f"  by message language: {versions}")
        paid = " (paid broadcast)" if self.paid else ""
        lines.append(f"Estimated time: {self.duration} at {self.rate:g} messages/s{paid}")
        if self.first_member:
            lines += [f"As the first recipient, {self.first_member}, gets it:", "---", self.first_text, "---"]
        lines += [f"Button: {b['text']} → {b['url']}" for b in self.buttons]
        if self.attachment:
            lines.append(f"Attached: {self.attachment}")
        return lines


def send_summary(broadcast: Broadcast, versions: list[tuple[str, str]] | None = None) -> SendSummary:
    """`versions`: the (arm, language) of message versions not saved yet."""
    members = recipients(broadcast)
    split = Split(broadcast, versions)
    by_arm, by_message_language = split.counts(members)
    left_out = audience_members(broadcast).aggregate(
        blocked=Count("pk", filter=Q(is_blocked=True)),
        opted_out=Count("pk", filter=Q(is_blocked=False, is_subscribed=False, opted_out_at__isnull=False)),
        never_subscribed=Count("pk", filter=Q(is_blocked=False, is_subscribed=False, opted_out_at__isnull=True)),
    )
    by_language = list(members.values_list("language_code").annotate(n=Count("pk")).order_by("-n", "language_code"))
    uses_pledge = needs_pledge(broadcast.body)
    first = with_pledges(members).order_by("pk").first()
    attached = broadcast.photo or broadcast.document
    return SendSummary(
        audience=broadcast.get_audience_display()
        + (f" “{broadcast.audience_value}”" if broadcast.audience_value else ""),
        recipients=sum(n for _, n in by_language),  # no second pass over the members to count them
        by_language=by_language,
        **left_out,
        needs_pledge=uses_pledge,
        without_pledge=without_pledge(members) if uses_pledge else 0,
        fallback=broadcast.no_pledge_fallback,
        rate=send_rate(broadcast),
        paid=broadcast.allow_paid_broadcast,
        first_member=first,
        first_text=rendered_for(broadcast, first, version_for(broadcast, first).text if broadcast.pk else None)
        if first
        else "",
        buttons=broadcast.buttons,
        attachment=f"{'photo' if broadcast.photo else 'document'} {Path(attached.name).name}" if attached else "",
        by_arm=by_arm,
        by_message_language=by_message_language,
        ab_test=ab_test_in_words(broadcast, split),
    )


def ab_test_in_words(broadcast: Broadcast, split: Split) -> str:
    """ "A/B test, even split" or "A/B test on a 10 % sample; the winner by clicks 4:00:00 after
    the sample is sent"."""
    if not split.has_sample:
        return "A/B test, even split"
    when = f"{broadcast.ab_wait} after the sample is sent" if broadcast.ab_send_winner else "when an operator says"
    measure = ABMeasure(broadcast.ab_measure).label.lower()
    return f"A/B test on a {broadcast.ab_sample_percent} % sample; the winner ({measure}) goes to the rest {when}"


def with_pledges(members):
    """Members with their pledges in the order `render` adds them up."""
    return members.prefetch_related(Prefetch("pledges", queryset=Pledge.objects.order_by("created_at")))


def without_pledge(members) -> int:
    """How many of `members` have no pledge (they see the fallback for pledge placeholders)."""
    return members.exclude(Exists(Pledge.objects.filter(member=OuterRef("pk")))).count()


def rendered_for(broadcast: Broadcast, member: TelegramUser, text: str | None = None) -> str:
    """The text (the broadcast's, or a version's) exactly as this member gets it (pledges
    prefetched by `with_pledges`, or read now)."""
    return render(
        broadcast.body if text is None else text,
        member,
        list(member.pledges.all()),
        broadcast.effective_parse_mode,
        broadcast.no_pledge_fallback,
    )


def marked_as_test(broadcast: Broadcast, member: TelegramUser, version: Version) -> str:
    """As `member` gets `version`, under a first line saying it is a test."""
    mark = TEST_MARK.get(broadcast.effective_parse_mode, "[TEST]")
    return f"{mark}\n{rendered_for(broadcast, member, version.text)}"


def send_rate(broadcast: Broadcast) -> float:
    """Messages per second the senders keep to (the bot's limit less the safety margin)."""
    return round(broadcast.bot.send_limit(broadcast.allow_paid_broadcast) * (1 - settings.TELEGRAM_RATE_MARGIN), 1)


def duration_in_words(seconds: float) -> str:
    """12 -> "about 12 s", 750 -> "about 12 min 30 s", 8000 -> "about 2 h 13 min"."""
    if seconds < 1:
        return "under a second"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"about {hours} h {minutes} min"
    if minutes:
        return f"about {minutes} min {secs} s" if secs else f"about {minutes} min"
    return f"about {secs} s"
