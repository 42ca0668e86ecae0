"""Pacing replies: about one message a second into one chat and twenty a minute into a
group, and a slot in the bot's overall rate, which replies share with broadcasts. The
slot is taken before the handler changes anything; the reply then leaves when the bot's
record of actual departures (queueing.departures) has room for it."""

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

import telegram
from django.conf import settings

from bots import telegram_api
from bots.models import Bot
from queueing.departures import get_departure_log, window
from queueing.errors import Deferred, retry_after_seconds
from queueing.queues import current_worker
from queueing.ratelimit import get_limiter

logger = logging.getLogger(__name__)

PRIVATE_CHAT_RATE = 1.0
GROUP_CHAT_RATE = 20 / 60
# Waiting longer than this would hold a worker idle: the update is handled again later.
LONGEST_WAIT = 0.1


def wait_for_reply_slot(bot: Bot, chat_id: int) -> None:
    limiter = get_limiter()
    margin = 1 - settings.TELEGRAM_RATE_MARGIN
    chat_rate = (PRIVATE_CHAT_RATE if chat_id > 0 else GROUP_CHAT_RATE) * margin
    chat = limiter.take(f"chat:{bot.pk}:{chat_id}", chat_rate, 1, horizon=LONGEST_WAIT)
    if not chat.slots:
        # Our own pacing, not Telegram's 429: the history and metrics count only those as 429s.
        raise Deferred(chat.delay, f"pacing replies into chat {chat_id}")
    # No horizon: a reply always gets the bot's next free slot, ahead of any broadcast
    # slot not yet claimed.
    overall = limiter.take(f"bot:{bot.pk}", bot.send_limit() * margin, 1)
    time.sleep(max(chat.delay, overall.delay))


@contextmanager
def departing(bot: Bot) -> Iterator[None]:
    """Around a reply's request: it leaves when fewer than the bot's limit of messages
    (replies and broadcasts, from every process) count within Telegram's sliding second, and
    it counts as late as its answer came back, as it may have reached Telegram that late.

    Its round trip beyond the fastest one is not enough: the circuit's database check,
    python-telegram-bot and a busy machine hold even the fastest reply back 5-25 ms after the
    log recorded it, while a broadcast's send leaves within a millisecond; a broadcast send
    closing the window of a reply counted at its record then reached Telegram within the same
    second (measured with bench.replies: the 429s left once late sends were counted on the
    right departure). A worker sends one reply at a time: its process (machine:pid) is the sender."""
    log, key, sender = get_departure_log(), f"bot:{bot.pk}", f"replies:{current_worker()}"
    limit, seconds = window(bot.send_limit(), settings.TELEGRAM_RATE_MARGIN)
    # A process's first reply sets up its client (getMe) before it leaves, not on the way.
    telegram_api.ready(bot)
    while True:
        # Timed from asking for room: the log records the departure before it answers.
        left = time.monotonic()
        if not (room := log.leave(key, sender, limit, seconds)):
            break
        time.sleep(room)
    try:
        yield
    finally:
        try:
            log.arrived(key, room.departure, time.monotonic() - left)
        except Exception:
            # The reply went out: failing now would send it again. Unanswered in the log, it
            # counts as late as a reply can be.
            logger.warning("Could not count a reply's answer in the shared record of departures", exc_info=True)


def pause_after_429(bot: Bot, exc: telegram.error.RetryAfter) -> None:
    """Telegram said wait: every process sending for this bot waits."""
    get_limiter().pause(f"bot:{bot.pk}", retry_after_seconds(exc))
