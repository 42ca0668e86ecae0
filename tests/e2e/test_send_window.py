"""A send window that closes mid-broadcast, with a real cluster against the fake Telegram:
sending stops at the close, says why, and carries on by itself when the window opens again."""

from datetime import UTC, datetime, timedelta

import pytest

from bots.models import TelegramUser
from broadcasts.models import Broadcast
from broadcasts.tasks import start_broadcast
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e


def hhmm(moment: datetime) -> str:
    return f"{moment:%H:%M:%S}" if moment.second else f"{moment:%H:%M}"


def test_a_window_that_closes_mid_broadcast_holds_the_rest_until_it_opens(telegram_bot, fake_telegram, clusters):
    members = TelegramUser.objects.bulk_create(
        TelegramUser(bot=telegram_bot, telegram_id=9_000_000 + n, first_name=f"M{n}", is_subscribed=True)
        for n in range(60)
    )
    clusters.start("telegram", TELEGRAM_RATE_LIMIT="5")  # 12 s of sending
    # Open all day but for a few seconds from `closes`: the window runs from `opens` to `closes`
    # the next day (or the same day, when the gap straddles midnight).
    closes = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=6)
    opens = closes + timedelta(seconds=6)
    broadcast = Broadcast.objects.create(
        bot=telegram_bot,
        text="Hello #first_name",
        window_start=opens.time(),
        window_end=closes.time(),
        window_timezone="UTC",
    )

    start_broadcast.enqueue(broadcast.pk)

    waiting = wait_for(
        lambda: Broadcast.objects.filter(pk=broadcast.pk, stall_reason__startswith="outside its send window").first(),
        timeout=60,
        what="sending to stop at the window's close",
    )
    window = f"{hhmm(opens)}–{hhmm(closes)} UTC"
    resumes = f"{opens:%Y-%m-%d} {hhmm(opens)} UTC"
    assert waiting.stall_reason == f"outside its send window ({window}); resumes at {resumes}"
    wait_for(
        lambda: Broadcast.objects.get(pk=broadcast.pk).status == Broadcast.Status.DONE,
        timeout=90,
        what="the broadcast to finish after the window opens",
    )
    calls = [call for call in fake_telegram.calls("sendMessage") if call.status == 200]
    assert sorted(call.params["chat_id"] for call in calls) == sorted(m.telegram_id for m in members)
    before = [call for call in calls if call.received_at < closes.timestamp() + 0.1]
    after = [call for call in calls if call.received_at >= opens.timestamp()]
    # Nothing while closed (a send that left just before the close may arrive just after it).
    assert len(before) + len(after) == len(calls)
    assert 0 < len(before) < 60
    assert Broadcast.objects.get(pk=broadcast.pk).stall_reason == ""
