"""`manage.py prune_deliveries --days N`: the delivery rows of broadcasts finished long ago are
summarised and deleted in batches; counts, progress and A/B results read the same after."""

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from bots.models import Bot, TelegramUser
from broadcasts import variants
from broadcasts.models import Broadcast, Click, Delivery, DeliverySummary
from tests.broadcasts.support import url
from tests.fake_telegram.objects import make_token

pytestmark = pytest.mark.django_db

# (arm, language, status) of each delivery of the old A/B test.
ROWS = (
    [("A", "", "sent")] * 9
    + [("A", "fr", "sent")] * 4
    + [("B", "", "sent")] * 6
    + [("B", "", "failed")] * 3
    + [("A", "", "unknown")] * 2
    + [("B", "fr", "skipped")] * 1
)


@pytest.fixture
def bot(settings) -> Bot:
    settings.TELEGRAM_BOT_TOKEN = ""
    return Bot.objects.create(token=make_token(7400001), webhook_secret=Bot.new_secret())


def broadcast_with_deliveries(bot: Bot, finished_days_ago: float, status=Broadcast.Status.DONE) -> Broadcast:
    broadcast = Broadcast.objects.create(
        bot=bot,
        text="Hi",
        status=status,
        started_at=timezone.now() - timedelta(days=finished_days_ago, hours=1),
        finished_at=timezone.now() - timedelta(days=finished_days_ago) if status != Broadcast.Status.SENDING else None,
    )
    first = 1_000 * (Broadcast.objects.count())
    members = TelegramUser.objects.bulk_create(
        TelegramUser(bot=bot, telegram_id=first + n, is_subscribed=True, is_blocked=n % 8 == 0)
        for n in range(len(ROWS))
    )
    deliveries = Delivery.objects.bulk_create(
        Delivery(broadcast=broadcast, member=m, chat_id=m.telegram_id, arm=arm, language=language, status=status)
        for m, (arm, language, status) in zip(members, ROWS, strict=True)
    )
    now = timezone.now()
    for delivery in deliveries[:3] + deliveries[13:15]:  # clicks in arms A and B, one member twice
        Click.objects.create(
            delivery=delivery,
            broadcast=broadcast,
            arm=delivery.arm,
            language=delivery.language,
            button=0,
            count=2,
            first_at=now,
            last_at=now,
        )
    Click.objects.create(
        delivery=deliveries[0],
        broadcast=broadcast,
        arm=deliveries[0].arm,
        language=deliveries[0].language,
        button=1,
        first_at=now,
        last_at=now,
    )
    return broadcast


def prune(*args: str) -> str:
    out = StringIO()
    call_command("prune_deliveries", *args, stdout=out)
    return out.getvalue()


def status_json(broadcast: Broadcast) -> dict:
    out = StringIO()
    call_command("broadcast_status", str(broadcast.pk), "--json", stdout=out)
    return json.loads(out.getvalue())


def test_counts_progress_results_and_status_read_the_same_after_pruning(bot, admin_client):
    old = broadcast_with_deliveries(bot, finished_days_ago=40)
    before = (old.counts(), variants.results(old), status_json(old))
    page_before = admin_client.get(url("progress_json", old.pk)).json()

    said = prune("--days", "30", "--batch-size", "7")

    assert not Delivery.objects.filter(broadcast=old).exists()
    assert not Click.objects.filter(delivery__broadcast=old).exists()
    assert f"{len(ROWS)} deleted in 4 batches" in said  # 25 rows, 7 at a time
    after = (old.counts(), variants.results(old), status_json(old))
    assert after == before
    assert before[0]["sent"] == 19 and before[0]["total"] == len(ROWS)
    arms = [(r.arm, r.sent, r.failed, r.clicked, r.blocked) for r in after[1]]
    assert arms == [("A", 13, 0, 3, 2), ("B", 6, 3, 2, 2)]
    assert admin_client.get(url("progress_json", old.pk)).json() == page_before
    page = admin_client.get(url("progress", old.pk))
    assert page.status_code == 200 and page.context["progress"]["counts"]["sent"] == 19


def test_only_broadcasts_finished_before_the_cut_are_pruned_and_a_rerun_changes_nothing(bot):
    old = broadcast_with_deliveries(bot, finished_days_ago=40)
    cancelled = broadcast_with_deliveries(bot, finished_days_ago=31, status=Broadcast.Status.CANCELLED)
    recent = broadcast_with_deliveries(bot, finished_days_ago=5)
    sending = broadcast_with_deliveries(bot, finished_days_ago=60, status=Broadcast.Status.SENDING)
    counts = {b.pk: b.counts() for b in (old, cancelled)}

    prune("--days", "30")
    summaries = DeliverySummary.objects.count()
    said = prune("--days", "30")

    assert "Pruned 0 deliveries" in said and DeliverySummary.objects.count() == summaries
    assert {b.pk: b.counts() for b in (old, cancelled)} == counts
    for kept in (recent, sending):
        assert Delivery.objects.filter(broadcast=kept).count() == len(ROWS)
        assert not kept.delivery_summaries.exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--days", "0"], "0 is not at least 1"),
        (["--days", "-3"], "-3 is not at least 1"),
        (["--days", "ten"], "'ten' is not a whole number"),
        (["--days", "30", "--batch-size", "0"], "0 is not at least 1"),
    ],
)
def test_nonsense_is_refused_and_nothing_is_deleted(bot, args, message):
    broadcast_with_deliveries(bot, finished_days_ago=400)

    with pytest.raises(CommandError, match=message):
        prune(*args)

    assert Delivery.objects.count() == len(ROWS) and not DeliverySummary.objects.exists()
