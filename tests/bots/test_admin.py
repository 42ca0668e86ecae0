"""The bot's admin: its own rates, edited and shown."""

import pytest
from django.contrib.auth.models import User
from django.urls import reverse

from bots.models import Bot
from tests.fake_telegram.objects import make_token

pytestmark = pytest.mark.django_db


def test_an_operator_sets_a_bots_own_rate_and_the_list_shows_the_rates_in_use(client, settings):
    settings.TELEGRAM_RATE_LIMIT, settings.TELEGRAM_PAID_RATE_LIMIT = 30, 1000
    bot = Bot.objects.create(token=make_token(7300001), webhook_secret=Bot.new_secret())
    client.force_login(User.objects.create_superuser("admin", "admin@example.com", "a long password"))

    page = client.post(
        reverse("admin:bots_bot_change", args=[bot.pk]),
        {
            "token": "",
            "webhook_secret": "",
            "api_base_url": "",
            "rate_limit": "20",
            "paid_rate_limit": "",
            "is_active": "on",
        },
    )

    assert page.status_code == 302
    bot.refresh_from_db()
    assert (bot.rate_limit, bot.paid_rate_limit) == (20, None)
    assert (bot.send_limit(), bot.send_limit(paid=True)) == (20, 1000)
    assert "20 (1000)" in client.get(reverse("admin:bots_bot_changelist")).content.decode()
    refused = client.post(
        reverse("admin:bots_bot_change", args=[bot.pk]), {"token": "", "rate_limit": "0", "is_active": "on"}
    )
    assert (
        refused.status_code == 200 and "Ensure this value is greater than or equal to 0.1" in refused.content.decode()
    )
