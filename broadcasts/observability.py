"""What broadcasts add to queueing's report, dashboard and metrics, registered in
BroadcastsConfig.ready() (queueing knows nothing of broadcasts)."""

from collections.abc import Iterator
from datetime import datetime

from django.db.models import Q, Sum
from django.urls import reverse
from prometheus_client.core import GaugeMetricFamily, Metric

from broadcasts.models import Broadcast, Delivery, DeliveryCount


def _counts(broadcasts: list[Broadcast]) -> dict[int, dict[str, int]]:
    """Deliveries per broadcast and status, in one query of the kept counts (broadcasts.delivery_counts)."""
    counts = {b.pk: dict.fromkeys(Delivery.Status.values, 0) | {"total": 0} for b in broadcasts}
    rows = (
        DeliveryCount.objects.filter(broadcast__in=[b.pk for b in broadcasts])
        .values_list("broadcast", "status")
        .annotate(n=Sum("n"))
        .order_by()
    )
    for broadcast, status, n in rows:
        counts[broadcast][status] = n
        counts[broadcast]["total"] += n
    return counts


def broadcast_outcomes(since: datetime, until: datetime) -> list[dict]:
    """Broadcasts that started or finished in [since, until], with their deliveries by status."""
    in_window = Q(started_at__gte=since, started_at__lte=until) | Q(finished_at__gte=since, finished_at__lte=until)
    broadcasts = list(Broadcast.objects.filter(in_window).select_related("bot").order_by("started_at", "pk"))
    counts = _counts(broadcasts)
    return [
        {
            "id": b.pk,
            "title": str(b),
            "bot": str(b.bot),
            "status": b.status,
            "started_at": b.started_at.isoformat() if b.started_at else None,
            "finished_at": b.finished_at.isoformat() if b.finished_at else None,
            "deliveries": counts[b.pk],
        }
        for b in broadcasts
    ]


def active_broadcasts() -> list[dict]:
    """Broadcasts sending or paused, with Broadcast.progress() and a link to their progress page."""
    active = Broadcast.objects.filter(status__in=[Broadcast.Status.SENDING, Broadcast.Status.PAUSED])
    return [
        {
            **b.progress(),
            "title": str(b),
            "bot": str(b.bot),
            "started_at": b.started_at.isoformat() if b.started_at else None,
            "url": reverse("admin:broadcasts_broadcast_progress", args=[b.pk]),
        }
        for b in active.select_related("bot").order_by("started_at", "pk")
    ]


def delivery_metrics() -> Iterator[Metric]:
    """Deliveries by state, for /metrics."""
    family = GaugeMetricFamily("broadcasts_deliveries", "Broadcast deliveries by state.", labels=["status"])
    for status, n in DeliveryCount.objects.per_status().items():
        family.add_metric([status], n)
    yield family
