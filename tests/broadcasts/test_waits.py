"""A broadcast's sender that finds another sending for its bot waits its turn: a Deferred, not a
RateLimited, so the job history and the "waiting out a 429" metric count 429s only."""

from contextlib import contextmanager

import pytest

from bots.models import Bot
from broadcasts import tasks
from broadcasts.models import Broadcast
from queueing.errors import DEFERRED, Deferred, RateLimited, classify
from tests.fake_telegram.objects import make_token

pytestmark = pytest.mark.django_db


def test_a_busy_sender_lock_defers_the_sender_without_calling_it_a_429(monkeypatch):
    bot = Bot.objects.create(token=make_token(7200001), webhook_secret=Bot.new_secret())
    broadcast = Broadcast.objects.create(bot=bot, text="Hi", status=Broadcast.Status.SENDING)

    @contextmanager
    def held_elsewhere(name: str):
        assert name == f"broadcast-sender:{bot.pk}"
        yield False

    monkeypatch.setattr(tasks, "try_lock", held_elsewhere)
    with pytest.raises(Deferred) as raised:
        tasks.send_deliveries(broadcast.pk)

    assert not isinstance(raised.value, RateLimited)
    assert classify(raised.value).error_class == DEFERRED
