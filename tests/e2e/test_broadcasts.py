"""Broadcasts with real `telegram` and `broadcasts` clusters against the fake Telegram."""

from pathlib import Path

import pytest

from bots.models import TelegramUser
from broadcasts.models import Broadcast, Delivery, Pledge
from broadcasts.tasks import start_broadcast
from tests.images import tiny_png
from tests.stalls import killed_now, report_stalls
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

FAST = {"TELEGRAM_RATE_LIMIT": "1000"}


def make_members(bot, count: int, first_id: int = 1_000_000, **fields) -> list[TelegramUser]:
    return TelegramUser.objects.bulk_create(
        TelegramUser(bot=bot, telegram_id=first_id + n, first_name=f"M{n}", **{"is_subscribed": True, **fields})
        for n in range(count)
    )


def send(bot, text: str = "Hello #first_name", **fields) -> Broadcast:
    broadcast = Broadcast.objects.create(bot=bot, text=text, **fields)
    start_broadcast.enqueue(broadcast.pk)
    return broadcast


def finished(broadcast: Broadcast) -> bool:
    broadcast.refresh_from_db()
    return broadcast.status == Broadcast.Status.DONE


def sent_chat_ids(fake) -> list[int]:
    return [call.params["chat_id"] for call in fake.calls("sendMessage") if call.status == 200]


def test_every_eligible_member_gets_exactly_one_personalised_message(telegram_bot, fake_telegram, clusters):
    eligible = make_members(telegram_bot, 2000)
    make_members(telegram_bot, 20, first_id=2_000_000, is_subscribed=False)
    make_members(telegram_bot, 20, first_id=3_000_000, is_blocked=True)
    Pledge.objects.create(bot=telegram_bot, member=eligible[0], telegram_id=eligible[0].telegram_id, amount=1250)
    clusters.start("telegram", **FAST)
    clusters.start("broadcasts", **FAST)

    broadcast = send(telegram_bot, "Dear #first_name, your pledge: #pledge")

    wait_for(lambda: finished(broadcast), timeout=120, what="the broadcast to finish")
    sent = sent_chat_ids(fake_telegram)
    assert sorted(sent) == sorted(m.telegram_id for m in eligible)
    texts = {call.params["chat_id"]: call.params["text"] for call in fake_telegram.calls("sendMessage")}
    assert texts[eligible[0].telegram_id] == "Dear M0, your pledge: 1,250 USD"
    assert texts[eligible[1].telegram_id] == "Dear M1, your pledge: -"
    assert broadcast.counts()["sent"] == 2000
    assert not Delivery.objects.exclude(status=Delivery.Status.SENT).exists()
    assert Delivery.objects.filter(message_id__isnull=True).count() == 0


def test_a_correct_limiter_never_meets_telegrams_429(telegram_bot, fake_telegram, clusters):
    fake_telegram.enforce_limits(per_second=30)
    make_members(telegram_bot, 150)
    clusters.start("telegram")
    clusters.start("broadcasts")

    broadcast = send(telegram_bot)

    wait_for(lambda: finished(broadcast), timeout=60, what="the broadcast to finish")
    assert fake_telegram.rate_limited_count == 0
    assert len(sent_chat_ids(fake_telegram)) == 150


def test_a_429_pauses_sending_for_retry_after_then_every_member_is_served(telegram_bot, fake_telegram, clusters):
    make_members(telegram_bot, 300)
    fake_telegram.fail("rate_limit", method="sendMessage", retry_after=2, times=1)
    clusters.start("telegram", **FAST)
    clusters.start("broadcasts", **FAST)

    broadcast = send(telegram_bot)

    wait_for(lambda: finished(broadcast), timeout=60, what="the broadcast to finish")
    calls = fake_telegram.calls("sendMessage")
    refused = next(c for c in calls if c.status == 429)
    during_pause = [c for c in calls if refused.answered_at < c.received_at < refused.answered_at + 1.9]
    # Only sends already on the wire when the 429 came back may arrive during the pause.
    assert len(during_pause) <= 5, len(during_pause)
    assert any(c.received_at >= refused.answered_at + 1.9 for c in calls), "sending resumed"
    assert sorted(sent_chat_ids(fake_telegram)) == sorted(TelegramUser.objects.values_list("telegram_id", flat=True))


def test_blocked_members_are_marked_and_a_server_error_waits_without_spending_an_attempt(
    telegram_bot, fake_telegram, clusters
):
    members = make_members(telegram_bot, 50)
    blocked, flaky = members[3], members[7]
    fake_telegram.fail("blocked", chat_id=blocked.telegram_id)
    fake_telegram.fail("server_error", chat_id=flaky.telegram_id, times=1)
    clusters.start("telegram", **FAST)

    broadcast = send(telegram_bot)

    wait_for(lambda: finished(broadcast), timeout=60, what="the broadcast to finish")
    assert Delivery.objects.get(member=blocked).status == Delivery.Status.FAILED
    assert TelegramUser.objects.get(pk=blocked.pk).is_blocked
    flaky_delivery = Delivery.objects.get(member=flaky)
    assert flaky_delivery.status == Delivery.Status.SENT
    # A 5xx is Telegram being away, not the delivery failing: only the send that worked counts.
    assert flaky_delivery.attempts == 1
    assert [c.status for c in fake_telegram.calls("sendMessage", chat_id=flaky.telegram_id)] == [500, 200]
    assert broadcast.counts()["sent"] == 49


def test_killing_every_cluster_mid_broadcast_serves_each_member_at_most_once(telegram_bot, fake_telegram, clusters):
    members = make_members(telegram_bot, 600)
    env = {"TELEGRAM_RATE_LIMIT": "100", "QUEUE_BROADCASTS_TIMEOUT": "20"}
    first = [clusters.start("telegram", **env), clusters.start("broadcasts", **env)]
    broadcast = send(telegram_bot)
    wait_for(lambda: len(fake_telegram.calls("sendMessage")) >= 150, timeout=30, what="sending to be under way")

    for cluster in first:
        cluster.kill()
    killed_at = killed_now()
    clusters.start("telegram", **env)
    clusters.start("broadcasts", **env)

    wait_for(lambda: finished(broadcast), timeout=90, what="the broadcast to finish after the kill")
    sent = sent_chat_ids(fake_telegram)
    assert len(sent) == len(set(sent)), "nobody got the broadcast twice"
    counts = broadcast.counts()
    assert counts["sent"] + counts["unknown"] == len(members)
    # Only the few in flight: slots are claimed at most SLOT_HORIZON ahead and answers are
    # recorded every loop turn, so well under one second of sending (100 at this rate).
    assert counts["unknown"] < 100
    unknown = set(Delivery.objects.filter(status=Delivery.Status.UNKNOWN).values_list("chat_id", flat=True))
    assert set(sent) | unknown == {m.telegram_id for m in members}
    report_stalls(fake_telegram, [killed_at], "SIGKILL of every cluster mid-broadcast")


def test_a_photo_is_uploaded_once_and_sent_to_everyone_by_file_id(telegram_bot, fake_telegram, clusters):
    from django.core.files.base import ContentFile

    make_members(telegram_bot, 30)
    clusters.start("telegram", **FAST)
    broadcast = Broadcast(bot=telegram_bot, text="Look, #first_name!")
    broadcast.photo.save("poster.png", ContentFile(tiny_png()), save=False)
    broadcast.save()

    start_broadcast.enqueue(broadcast.pk)

    wait_for(lambda: finished(broadcast), timeout=60, what="the broadcast to finish")
    photos = [c for c in fake_telegram.calls("sendPhoto") if c.status == 200]
    assert len(photos) == 30
    uploads = [c for c in photos if c.files]
    assert len(uploads) == 1 and uploads[0].files[0].filename == Path(broadcast.photo.name).name
    file_id = uploads[0].response["result"]["photo"][-1]["file_id"]
    assert {c.params["photo"] for c in photos if not c.files} == {file_id}
    assert {c.params["caption"] for c in photos} >= {"Look, M0!", "Look, M29!"}
    assert not fake_telegram.calls("sendMessage")
