"""Paid broadcasts (allow_paid_broadcast): `send_broadcast --paid` and its cost, and a paid
chunk paced at TELEGRAM_PAID_RATE_LIMIT against the fake enforcing the paid and free limits."""

from io import StringIO

import pytest
from django.core.management import call_command

from bots.models import Bot, TelegramUser
from broadcasts.models import Broadcast
from broadcasts.sending import fan_out
from broadcasts.tasks import send_deliveries
from tests.broadcasts.test_sending import most_in_one_second
from tests.fake_telegram.objects import make_token

FREE, PAID = 30, 120


def send(*args: str) -> tuple[Broadcast, str]:
    out, err = StringIO(), StringIO()
    call_command("send_broadcast", "--yes", *args, stdout=out, stderr=err)
    return Broadcast.objects.get(pk=int(out.getvalue().strip())), err.getvalue()


@pytest.fixture
def members(db, settings) -> Bot:
    settings.TELEGRAM_BOT_TOKEN = ""
    bot = Bot.objects.create(token=make_token(7300001), webhook_secret=Bot.new_secret())
    TelegramUser.objects.bulk_create(
        TelegramUser(bot=bot, telegram_id=100 + n, first_name=f"M{n}", is_subscribed=True) for n in range(40)
    )
    return bot


def test_send_broadcast_paid_makes_a_paid_broadcast_and_says_what_it_costs(members):
    broadcast, said = send("--text", "Hi", "--paid")

    assert broadcast.allow_paid_broadcast
    assert "Paid broadcast: Telegram charges 0.1 Stars per message, up to 4.0 Stars for 40 recipients" in said


def test_without_paid_a_broadcast_is_free_and_no_cost_is_mentioned(members):
    broadcast, said = send("--text", "Hi")

    assert not broadcast.allow_paid_broadcast
    assert "Stars" not in said


@pytest.mark.filterwarnings("ignore:Please use 'Bot.send")
def test_a_paid_broadcast_goes_past_the_free_limit_at_the_paid_one_with_no_429(telegram_bot, fake_telegram, settings):
    settings.TELEGRAM_RATE_LIMIT, settings.TELEGRAM_PAID_RATE_LIMIT = FREE, PAID
    fake_telegram.enforce_limits(per_second=FREE, paid_per_second=PAID)
    count = 3 * PAID
    TelegramUser.objects.bulk_create(
        TelegramUser(bot=telegram_bot, telegram_id=6_000_000 + n, first_name=f"M{n}", is_subscribed=True)
        for n in range(count)
    )
    broadcast = Broadcast.objects.create(
        bot=telegram_bot, text="Hi #first_name", status=Broadcast.Status.SENDING, allow_paid_broadcast=True
    )
    fan_out(broadcast)
    outcome = send_deliveries(broadcast.pk)

    assert outcome["sent"] == count and fake_telegram.rate_limited_count == 0
    calls = fake_telegram.calls("sendMessage")
    assert all(c.params.get("allow_paid_broadcast") is True for c in calls)
    most = most_in_one_second(sorted(c.received_at for c in calls))
    assert FREE < most <= PAID  # paced at the paid limit, not the free one
