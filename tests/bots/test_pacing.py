"""A reply that must wait for its chat's pace is our own wait, not Telegram's 429: the job
history, the "waiting out a 429" metric and the 429 counter leave it out."""

import pytest

from bots.models import Bot
from bots.pacing import departing, wait_for_reply_slot
from queueing.departures import get_departure_log
from queueing.errors import DEFERRED, Deferred, RateLimited, classify
from queueing.models import JobRecord
from queueing.ratelimit import Grant, get_limiter
from queueing.stats import rate_limited_waits
from tests.fake_telegram.objects import make_token

pytestmark = pytest.mark.django_db

CHAT_ID = 4200


def test_a_reply_paced_into_its_chat_waits_without_being_counted_as_a_429():
    bot = Bot.objects.create(token=make_token(7200002), webhook_secret=Bot.new_secret())
    # The chat's next slot an hour away, as if it had just been sent to (no clock involved).
    get_limiter().take(f"chat:{bot.pk}:{CHAT_ID}", rate=1 / 3600)
    record = JobRecord.objects.create(queue="telegram", kind="bots.tasks.handle_update", status="running", attempts=1)

    throttled = get_limiter().throttled()  # Redis keeps other tests' counts

    with pytest.raises(Deferred) as raised:
        wait_for_reply_slot(bot, CHAT_ID)
    record.record_failure(raised.value)

    assert not isinstance(raised.value, RateLimited)
    assert classify(raised.value).error_class == DEFERRED
    record.refresh_from_db()
    assert (record.status, record.error_class) == (JobRecord.Status.RETRYING, DEFERRED)
    assert rate_limited_waits()["telegram"] == 0
    assert get_limiter().throttled() == throttled


def test_replies_keep_to_the_bots_own_rate(telegram_bot, settings, monkeypatch):
    """A bot with a rate of its own (Bot.rate_limit) is paced at it, not at TELEGRAM_RATE_LIMIT:
    its slots in the limiter and its window of departures."""
    settings.TELEGRAM_RATE_LIMIT, settings.TELEGRAM_RATE_MARGIN = 30, 0.005
    telegram_bot.rate_limit = 20
    telegram_bot.save()
    limiter, log = get_limiter(), get_departure_log()
    rates, windows = [], []
    monkeypatch.setattr(limiter, "take", lambda key, rate, *a, **kw: rates.append((key, rate)) or Grant(1, 0.0))
    leave = log.leave
    monkeypatch.setattr(
        log, "leave", lambda key, sender, limit, seconds: windows.append(limit) or leave(key, sender, limit, seconds)
    )

    wait_for_reply_slot(telegram_bot, CHAT_ID)
    with departing(telegram_bot):
        pass

    assert rates[-1] == (f"bot:{telegram_bot.pk}", pytest.approx(20 * 0.995))
    assert windows == [20]
