"""The counts the database keeps of each broadcast's deliveries (broadcasts.delivery_counts)
equal a plain GROUP BY over the rows after every kind of change: the fan-out, claims, sends
and their outcomes, skips, cancels, a dead sender's rows, retries, the A/B winner, pruning,
deleted members and broadcasts; and again once folded."""

import threading
from collections import Counter
from datetime import UTC
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import close_old_connections, connection, transaction
from django.db.models import Count, DateTimeField, Value
from django.db.models.functions import TruncMinute
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from bots.models import TelegramUser
from broadcasts import delivery_counts, variants
from broadcasts.models import Broadcast, Delivery, DeliveryCount, MessageVersion
from broadcasts.sending import fan_out
from broadcasts.tasks import send_deliveries
from tests.broadcasts.support import make_members, sending

pytestmark = pytest.mark.django_db


def grouped(broadcast: Broadcast) -> tuple[dict, dict]:
    """Per (arm, language, status), and sent per minute, counted from the rows."""
    rows = broadcast.deliveries.values_list("arm", "language", "status").annotate(n=Count("pk")).order_by()
    per_minute: Counter = Counter()
    for *_, minute, n in _per_minute(broadcast):
        if minute is not None:
            per_minute[minute] += n
    return {(arm, language, status): n for arm, language, status, n in rows}, dict(per_minute)


def _per_minute(broadcast: Broadcast) -> list[tuple]:
    """(arm, language, status, minute sent for the sent ones, else None, n) of the rows."""
    sent = broadcast.deliveries.filter(status=Delivery.Status.SENT)
    return [
        *sent.annotate(minute=TruncMinute("sent_at", tzinfo=UTC))
        .values_list("arm", "language", "status", "minute")
        .annotate(n=Count("pk"))
        .order_by(),
        *broadcast.deliveries.exclude(status=Delivery.Status.SENT)
        .values_list("arm", "language", "status")
        .annotate(minute=Value(None, DateTimeField()), n=Count("pk"))
        .order_by(),
    ]


def assert_exact(broadcast: Broadcast) -> None:
    """As the rows say, before and after folding; folded, one row per key."""
    by_key, per_minute = grouped(broadcast)
    assert by_key, "nothing to compare"
    assert (
        DeliveryCount.objects.filter(broadcast=broadcast).per_key(),
        DeliveryCount.objects.filter(broadcast=broadcast).sent_per_minute(),
    ) == (by_key, per_minute)
    delivery_counts.fold()
    assert (
        DeliveryCount.objects.filter(broadcast=broadcast).per_key(),
        DeliveryCount.objects.filter(broadcast=broadcast).sent_per_minute(),
    ) == (by_key, per_minute)
    folded = DeliveryCount.objects.filter(broadcast=broadcast)
    rows = folded.values_list("arm", "language", "status", "sent_minute", "n", "folded")
    assert sorted(rows, key=str) == sorted(((*key, True) for key in _per_minute(broadcast)), key=str)


def test_the_fan_out_counts_each_delivery_with_its_arm_language_and_whether_it_is_held(bot):
    make_members(bot, 30, language_code="fr")
    make_members(bot, 20, first_id=2_000_000)
    broadcast = Broadcast.objects.create(bot=bot, text="A", ab_sample_percent=40, status=Broadcast.Status.SENDING)
    MessageVersion.objects.create(broadcast=broadcast, arm="B", text="B")
    MessageVersion.objects.create(broadcast=broadcast, arm="A", language="fr", text="A fr")

    assert fan_out(broadcast) == 50

    assert_exact(broadcast)
    statuses = DeliveryCount.objects.filter(broadcast=broadcast).per_status()
    assert set(statuses) == {Delivery.Status.PENDING, Delivery.Status.HELD} and sum(statuses.values()) == 50


def test_claims_and_a_cancel_are_counted(bot):
    broadcast = sending(bot, members=10)
    ids = list(broadcast.deliveries.order_by("pk").values_list("pk", flat=True))
    claimed = Delivery.objects.claim(ids[:4], "host:1")
    assert Delivery.objects.start_sending(claimed[:3], "host:1") == 3
    Delivery.objects.filter(pk=ids[5]).update(status=Delivery.Status.RETRYING)
    assert_exact(broadcast)

    assert broadcast.cancel() == 7  # the pending and the retrying; the three sending stay

    assert_exact(broadcast)
    assert DeliveryCount.objects.filter(broadcast=broadcast).per_status() == {"sending": 3, "cancelled": 7}


@pytest.mark.filterwarnings("ignore:Please use 'Bot.send")
def test_sends_failures_skips_a_dead_senders_rows_and_sending_again_are_counted(telegram_bot, fake_telegram):
    members = make_members(telegram_bot, 12)
    fake_telegram.fail("blocked", chat_id=members[1].telegram_id)
    fake_telegram.fail("bad_request", chat_id=members[2].telegram_id)
    broadcast = Broadcast.objects.create(bot=telegram_bot, text="Hi", status=Broadcast.Status.SENDING)
    fan_out(broadcast)
    TelegramUser.objects.filter(pk=members[3].pk).update(is_subscribed=False)  # opted out since: skipped
    left = broadcast.deliveries.get(member=members[4])
    Delivery.objects.filter(pk=left.pk).update(status=Delivery.Status.SENDING, claimed_by="dead:1")

    outcome = send_deliveries(broadcast.pk)

    assert (outcome["sent"], outcome["failed"], outcome["skipped"]) == (8, 2, 1)
    assert broadcast.deliveries.get(pk=left.pk).status == Delivery.Status.UNKNOWN
    assert_exact(broadcast)
    assert DeliveryCount.objects.filter(broadcast=broadcast).per_status() == {
        "sent": 8,
        "failed": 2,
        "skipped": 1,
        "unknown": 1,
    }

    assert broadcast.resend_unknown() == 1
    assert broadcast.retry_failed() == 1  # not the member who blocked the bot
    assert_exact(broadcast)
    assert DeliveryCount.objects.filter(broadcast=broadcast).per_status() == {
        "sent": 8,
        "failed": 1,
        "skipped": 1,
        "pending": 2,
    }


def test_the_ab_winner_takes_the_held_deliveries(bot):
    make_members(bot, 40)
    broadcast = Broadcast.objects.create(bot=bot, text="A", ab_sample_percent=25, status=Broadcast.Status.SENDING)
    MessageVersion.objects.create(broadcast=broadcast, arm="B", text="B")
    fan_out(broadcast)
    held = broadcast.deliveries.filter(status=Delivery.Status.HELD).count()

    assert variants.decide(broadcast, "B") == held

    assert_exact(broadcast)
    assert DeliveryCount.objects.filter(broadcast=broadcast).per_key()[("B", "", Delivery.Status.PENDING)] >= held


def test_pruned_deliveries_leave_no_count_behind_and_counts_come_from_the_summary(bot):
    broadcast = sending(bot, members=6)
    broadcast.deliveries.update(status=Delivery.Status.SENT, sent_at=timezone.now())
    Broadcast.objects.filter(pk=broadcast.pk).update(
        status=Broadcast.Status.DONE, finished_at=timezone.now() - timezone.timedelta(days=40)
    )

    call_command("prune_deliveries", "--days", "30", stdout=StringIO())

    assert not broadcast.deliveries.exists()
    assert (
        DeliveryCount.objects.filter(broadcast=broadcast).per_key() == {}
        and DeliveryCount.objects.filter(broadcast=broadcast).sent_per_minute() == {}
    )
    assert broadcast.counts()["sent"] == broadcast.counts()["total"] == 6


def test_a_deleted_member_is_uncounted_and_a_deleted_broadcasts_counts_go_at_the_fold(bot):
    broadcast = sending(bot, members=5)
    other = Broadcast.objects.create(bot=bot, text="Also", status=Broadcast.Status.SENDING)
    fan_out(other)
    broadcast.deliveries.first().member.delete()

    assert_exact(broadcast)
    assert_exact(other)
    assert sum(DeliveryCount.objects.filter(broadcast=broadcast).per_status().values()) == 4

    deleted = broadcast.pk
    broadcast.delete()
    assert DeliveryCount.objects.filter(broadcast_id=deleted).exists()
    delivery_counts.fold()

    assert not DeliveryCount.objects.filter(broadcast_id=deleted).exists()
    assert_exact(other)


def test_counts_and_progress_read_the_counts_not_the_deliveries(bot):
    broadcast = sending(bot, members=5)
    with CaptureQueriesContext(connection) as queries:
        counts = broadcast.counts()
    assert counts["pending"] == counts["total"] == 5
    table = connection.ops.quote_name(Delivery._meta.db_table)
    assert not [q["sql"] for q in queries if table in q["sql"]]


@pytest.mark.django_db(transaction=True)
def test_counts_stay_exact_while_senders_change_rows_and_the_counts_are_folded(bot):
    """Four threads move deliveries through their statuses in small transactions while the
    counts are folded over and over; then the counts equal the rows."""
    broadcast = sending(bot, members=400)
    ids = list(broadcast.deliveries.order_by("pk").values_list("pk", flat=True))
    stop = threading.Event()
    errors: list[BaseException] = []

    def sender(mine: list[int]) -> None:
        try:
            for start in range(0, len(mine), 10):
                batch = mine[start : start + 10]
                with transaction.atomic():
                    Delivery.objects.filter(pk__in=batch).update(status=Delivery.Status.SENDING)
                with transaction.atomic():
                    Delivery.objects.filter(pk__in=batch[:7]).update(
                        status=Delivery.Status.SENT, sent_at=timezone.now()
                    )
                    Delivery.objects.filter(pk__in=batch[7:]).update(status=Delivery.Status.FAILED)
        except BaseException as exc:  # reported by the test
            errors.append(exc)
        finally:
            close_old_connections()
            connection.close()

    def folder() -> None:
        try:
            while not stop.is_set():
                delivery_counts.fold()
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=sender, args=(ids[n::4],)) for n in range(4)]
    folding = threading.Thread(target=folder)
    folding.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stop.set()
    folding.join()

    assert not errors
    assert_exact(broadcast)
    assert DeliveryCount.objects.filter(broadcast=broadcast).per_status() == {"sent": 280, "failed": 120}
