"""Delete the delivery rows of broadcasts that finished long ago, keeping their counts."""

from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.db.models import Count, Exists, OuterRef, Q, Sum
from django.utils import timezone

from broadcasts.models import Broadcast, Click, Delivery, DeliverySummary
from broadcasts.results import BLOCKED_AFTER, UNSUBSCRIBED

BATCH_SIZE = 10_000


def positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise CommandError(f"{value!r} is not a whole number.") from None
    if number < 1:
        raise CommandError(f"{number} is not at least 1.")
    return number


def summarise(broadcast: Broadcast) -> int:
    """Per arm, language and status: the deliveries, those whose member clicked, those whose
    member has blocked the bot. Once per broadcast: a run that stopped halfway already did it."""
    with transaction.atomic():
        Broadcast.objects.select_for_update().filter(pk=broadcast.pk).first()
        if broadcast.delivery_summaries.exists():
            return 0
        group = ("arm", "language", "status")
        rows = (
            broadcast.deliveries.values(*group)
            .annotate(
                count=Count("pk"),
                clicked=Count("pk", filter=Q(Exists(Click.objects.filter(delivery=OuterRef("pk"))))),
                blocked=Count("pk", filter=Q(member__is_blocked=True)),
                blocked_after=Count("pk", filter=BLOCKED_AFTER),
                unsubscribed=Count("pk", filter=UNSUBSCRIBED),
            )
            .order_by()
        )
        presses = {
            tuple(row[f"delivery__{field}"] for field in group): row["presses"]
            for row in Click.objects.filter(delivery__broadcast=broadcast)
            .values(*(f"delivery__{field}" for field in group))
            .annotate(presses=Sum("count"))
            .order_by()
        }
        return len(
            DeliverySummary.objects.bulk_create(
                DeliverySummary(broadcast=broadcast, presses=presses.get(tuple(row[f] for f in group), 0), **row)
                for row in rows
            )
        )


def delete_in_batches(broadcast: Broadcast, batch_size: int) -> tuple[int, int]:
    """Delete the broadcast's deliveries (and their clicks) `batch_size` rows at a time, each
    batch its own transaction: no long lock, no whole table in memory. (rows, batches)."""
    deleted = batches = 0
    while ids := list(
        Delivery.objects.filter(broadcast=broadcast).order_by("pk").values_list("pk", flat=True)[:batch_size]
    ):
        with transaction.atomic():
            Click.objects.filter(delivery_id__in=ids).delete()
            deleted += Delivery.objects.filter(pk__in=ids).delete()[1].get(Delivery._meta.label, 0)
        batches += 1
    return deleted, batches


class Command(BaseCommand):
    help = (
        "Summarise and delete the delivery rows of broadcasts finished (done or cancelled) more than "
        "--days days ago. Their progress page, results and broadcast_status keep showing the counts."
    )

    def add_arguments(self, parser):
        parser.add_argument("--days", required=True, type=str, help="Prune broadcasts finished this many days ago.")
        parser.add_argument(
            "--batch-size", type=str, default=str(BATCH_SIZE), help=f"Rows per delete (default {BATCH_SIZE})."
        )

    def handle(self, *args, **options):
        days, batch_size = positive(options["days"]), positive(options["batch_size"])
        before = timezone.now() - timedelta(days=days)
        finished = Broadcast.objects.filter(
            status__in=[Broadcast.Status.DONE, Broadcast.Status.CANCELLED], finished_at__lt=before
        ).filter(Exists(Delivery.objects.filter(broadcast=OuterRef("pk"))))
        total = 0
        for broadcast in finished.order_by("finished_at"):
            summarised = summarise(broadcast)
            deleted, batches = delete_in_batches(broadcast, batch_size)
            total += deleted
            kept = f"{summarised} summary rows keep their counts" if summarised else "summarised by an earlier run"
            self.stdout.write(f"{broadcast} (#{broadcast.pk}): {deleted} deleted in {batches} batches; {kept}")
        self.stdout.write(f"Pruned {total} deliveries of broadcasts finished before {before:%Y-%m-%d %H:%M}.")
