"""A broadcast's results, per A/B arm and per language: sent, failed, members who blocked the
bot after their message, members who unsubscribed (the Stop button, or blocking after the
message), members who clicked (`clicks`) and all their clicks (`presses`), the click-through rate (members who
clicked per message sent), and messages sent per minute over time.

Every figure is found per (arm, language) once and added up for the totals, the arms and the
languages: sent, failed and the minutes from the counts the database keeps
(broadcasts.delivery_counts); the few members who pressed Stop, blocked the bot or clicked on
their indexes, and the clicks (each keeps its delivery's arm and language). A million
deliveries are never read."""

import math
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timedelta

from django.db.models import Count, F, Q, QuerySet, Sum
from django.utils import timezone
from django.utils.safestring import SafeString

from broadcasts.models import Broadcast, Delivery, DeliveryCount
from queueing.dashboard import CHART_BINS, Point, chart_svg

BLOCKED_AFTER = Q(member__blocked_at__gt=F("sent_at"))
UNSUBSCRIBED = Q(unsubscribed_at__isnull=False) | BLOCKED_AFTER
GROUPINGS = {"arms": "arm", "languages": "language"}
VERSION = ("arm", "language")


@dataclass
class Figures:
    sent: int = 0
    failed: int = 0
    blocked_after: int = 0
    unsubscribed: int = 0
    clicks: int = 0  # members who clicked a button at least once
    presses: int = 0  # every click, however often a member clicked

    @property
    def click_through(self) -> float | None:
        """Members who clicked per message sent, in percent."""
        return round(100 * self.clicks / self.sent, 1) if self.sent else None

    def add(self, other: "Figures") -> None:
        for name in (f.name for f in fields(self)):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def as_dict(self) -> dict:
        return {**asdict(self), "click_through": self.click_through}


def figures(broadcast: Broadcast, pruned: bool | None = None) -> dict[tuple[str, str], Figures]:
    """The figures per (arm, language) of the deliveries. Deliveries held for an A/B winner
    are not sent yet: they are left out. A broadcast whose rows were pruned
    (prune_deliveries) answers from its summary (`pruned`: whether it was, when the caller
    knows)."""
    if broadcast.delivery_summaries.exists() if pruned is None else pruned:
        return _summarised(broadcast)
    found: dict[tuple[str, str], Figures] = {}
    for (arm, language, status), n in DeliveryCount.objects.filter(broadcast=broadcast).per_key().items():
        if status != Delivery.Status.HELD:
            version = found.setdefault((arm, language), Figures())
            version.sent += n if status == Delivery.Status.SENT else 0
            version.failed += n if status == Delivery.Status.FAILED else 0
    deliveries = broadcast.deliveries.exclude(status=Delivery.Status.HELD)
    blocked = of_blocked_members(broadcast).filter(BLOCKED_AFTER).exclude(status=Delivery.Status.HELD)
    for row in (
        blocked.values(*VERSION)
        .annotate(blocked_after=Count("pk"), only_blocked=Count("pk", filter=Q(unsubscribed_at__isnull=True)))
        .order_by()
    ):
        version = found.setdefault((row["arm"], row["language"]), Figures())
        version.blocked_after, version.unsubscribed = row["blocked_after"], row["only_blocked"]
    stopped = deliveries.filter(unsubscribed_at__isnull=False).values_list(*VERSION).annotate(n=Count("pk")).order_by()
    for arm, language, n in stopped:
        found.setdefault((arm, language), Figures()).unsubscribed += n
    clicked = (
        broadcast.clicks.values_list(*VERSION)
        .annotate(clicks=Count("delivery", distinct=True), presses=Sum("count"))
        .order_by()
    )
    for arm, language, clicks, presses in clicked:
        version = found.setdefault((arm, language), Figures())
        version.clicks, version.presses = clicks, presses
    return found


def of_blocked_members(broadcast: Broadcast) -> QuerySet:
    """The broadcast's deliveries to members who blocked the bot, found from those few
    members (their partial index) and their deliveries (by member): the broadcast is compared
    as a value, not looked up on its index, which the planner would take, reading every row
    of the broadcast, while the statistics predate its fan-out (they say it has none)."""
    return (
        Delivery.objects.filter(member__bot=broadcast.bot_id)
        .filter(Q(member__blocked_at__isnull=False) | Q(member__is_blocked=True))
        .alias(of=F("broadcast_id") + 0)
        .filter(of=broadcast.pk)
    )


def _summarised(broadcast: Broadcast) -> dict[tuple[str, str], Figures]:
    summed = (
        broadcast.delivery_summaries.exclude(status=Delivery.Status.HELD)
        .values(*VERSION)
        .annotate(
            sent=Sum("count", filter=Q(status=Delivery.Status.SENT)),
            failed=Sum("count", filter=Q(status=Delivery.Status.FAILED)),
            blocked_after=Sum("blocked_after"),
            unsubscribed=Sum("unsubscribed"),
            clicks=Sum("clicked"),
            presses=Sum("presses"),
        )
    )
    return {
        (row.pop("arm"), row.pop("language")): Figures(**{name: value or 0 for name, value in row.items()})
        for row in summed
    }


def added_up(per_version: dict[tuple[str, str], Figures], by: str | None = None) -> dict[str, Figures]:
    """The figures per arm or language (`by`), in order, or in total (under "")."""
    result: dict[str, Figures] = {}
    for (arm, language), version in sorted(per_version.items()):
        group = {"arm": arm, "language": language}.get(by or "", "")
        result.setdefault(group, Figures()).add(version)
    return dict(sorted(result.items()))


@dataclass(frozen=True)
class Minute:
    at: datetime
    sent: int


def per_minute(broadcast: Broadcast) -> list[Minute]:
    """Messages sent in each minute from the first send to the last, quiet minutes included."""
    counted = {
        timezone.localtime(minute): n
        for minute, n in DeliveryCount.objects.filter(broadcast=broadcast).sent_per_minute().items()
    }
    if not counted:
        return []
    first, last = min(counted), max(counted)
    minutes = int((last - first).total_seconds() // 60) + 1
    return [Minute(at, counted.get(at, 0)) for at in (first + timedelta(minutes=i) for i in range(minutes))]


def chart(minutes: list[Minute]) -> SafeString:
    """Messages sent per minute as the queue dashboard's chart: at most CHART_BINS bins, each
    the average of its minutes."""
    width = max(1, math.ceil(len(minutes) / CHART_BINS))
    points = [
        Point(minutes[i].at, sum(m.sent for m in minutes[i : i + width]) / width, None)
        for i in range(0, len(minutes), width)
    ]
    return chart_svg(points, noun="messages", done="sent")


def results(broadcast: Broadcast) -> dict:
    """The results page's and broadcast_status --json's figures: the totals, then per arm
    and per language, and messages sent per minute."""
    per_version = figures(broadcast)
    total = added_up(per_version).get("") or Figures()
    return {
        **total.as_dict(),
        **{
            name: [{field: value, **f.as_dict()} for value, f in added_up(per_version, field).items()]
            for name, field in GROUPINGS.items()
        },
        "per_minute": [{"at": m.at.isoformat(), "sent": m.sent} for m in per_minute(broadcast)],
    }
