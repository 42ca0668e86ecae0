"""A broadcast's results, per A/B arm and per language: sent, failed, members who blocked the
bot after their message, members who unsubscribed (the Stop button, or blocking after the
message), members who clicked (`clicks`) and all their clicks (`presses`), the click-through rate (members who
clicked per message sent), and messages sent per minute over time.

Every figure comes from a GROUP BY: one over the deliveries, one over the clicks, one over
the minutes; a broadcast of a million members costs three queries per grouping, no Python
loop over its rows."""

import math
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from django.db.models import Count, F, Q, QuerySet, Sum, Value
from django.db.models.functions import TruncMinute
from django.utils.safestring import SafeString

from broadcasts.models import Broadcast, Click, Delivery
from queueing.dashboard import CHART_BINS, Point, chart_svg

BLOCKED_AFTER = Q(member__blocked_at__gt=F("sent_at"))
UNSUBSCRIBED = Q(unsubscribed_at__isnull=False) | BLOCKED_AFTER
GROUPINGS = {"arms": "arm", "languages": "language"}


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

    def as_dict(self) -> dict:
        return {**asdict(self), "click_through": self.click_through}


def figures(broadcast: Broadcast, by: str | None = None, pruned: bool | None = None) -> dict[str, Figures]:
    """The figures per value of the deliveries' field `by` ("arm", "language"), or in total
    (under ""). Deliveries held for an A/B winner are not sent yet: they are left out. A
    broadcast whose rows were pruned (prune_deliveries) answers from its summary (`pruned`:
    whether it was, when the caller knows)."""
    if broadcast.delivery_summaries.exists() if pruned is None else pruned:
        return _summarised(broadcast, by)
    deliveries = broadcast.deliveries.exclude(status=Delivery.Status.HELD)
    clicks = Click.objects.filter(delivery__broadcast=broadcast)
    counted = _grouped(deliveries, by).annotate(
        sent=Count("pk", filter=Q(status=Delivery.Status.SENT)),
        failed=Count("pk", filter=Q(status=Delivery.Status.FAILED)),
        blocked_after=Count("pk", filter=BLOCKED_AFTER),
        unsubscribed=Count("pk", filter=UNSUBSCRIBED),
    )
    clicked = _grouped(clicks, by and f"delivery__{by}").annotate(
        clicks=Count("delivery", distinct=True), presses=Sum("count")
    )
    result: dict[str, Figures] = {}
    for row in counted:
        group = row.pop("group")
        result[group] = Figures(**row)
    for row in clicked:
        found = result.setdefault(row["group"], Figures())
        found.clicks, found.presses = row["clicks"], row["presses"]
    return result


def _summarised(broadcast: Broadcast, by: str | None) -> dict[str, Figures]:
    summed = _grouped(broadcast.delivery_summaries.exclude(status=Delivery.Status.HELD), by).annotate(
        sent=Sum("count", filter=Q(status=Delivery.Status.SENT)),
        failed=Sum("count", filter=Q(status=Delivery.Status.FAILED)),
        blocked_after=Sum("blocked_after"),
        unsubscribed=Sum("unsubscribed"),
        clicks=Sum("clicked"),
        presses=Sum("presses"),
    )
    return {row.pop("group"): Figures(**{name: value or 0 for name, value in row.items()}) for row in summed}


def _grouped(rows: QuerySet, field: str | None) -> QuerySet:
    """GROUP BY `field` (or nothing: one group, the total), its value named `group`."""
    if field is None:
        return rows.annotate(group=Value("")).values("group")
    return rows.annotate(group=F(field)).values("group").order_by("group")


@dataclass(frozen=True)
class Minute:
    at: datetime
    sent: int


def per_minute(broadcast: Broadcast) -> list[Minute]:
    """Messages sent in each minute from the first send to the last, quiet minutes included."""
    counted = dict(
        broadcast.deliveries.filter(status=Delivery.Status.SENT, sent_at__isnull=False)
        .annotate(minute=TruncMinute("sent_at"))
        .values_list("minute")
        .annotate(n=Count("pk"))
        .order_by("minute")
    )
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
    pruned = broadcast.delivery_summaries.exists()
    total = figures(broadcast, pruned=pruned).get("") or Figures()
    return {
        **total.as_dict(),
        **{
            name: [{field: value, **f.as_dict()} for value, f in figures(broadcast, field, pruned).items()]
            for name, field in GROUPINGS.items()
        },
        "per_minute": [{"at": m.at.isoformat(), "sent": m.sent} for m in per_minute(broadcast)],
    }
