"""Click tracking and the Stop button with a real `telegram` cluster against the fake
Telegram: the buttons a member received go through the live server's redirect, counted once
per member in the results; pressing Stop, posted to the real webhook as Telegram would, opts
the member out, is answered, and counts as an unsubscribe for that broadcast and arm."""

import http.client
from urllib.parse import urlsplit

import pytest

from bots.models import TelegramUser
from broadcasts.models import Broadcast, MessageVersion
from broadcasts.tasks import start_broadcast
from tests.e2e.test_broadcasts import FAST, finished, make_members
from tests.fake_telegram import make_user, updates
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e


def keyboard_of(fake, chat_id: int) -> list[dict]:
    """The buttons under the one message the member received, one a row."""
    (call,) = [c for c in fake.calls("sendMessage", chat_id=chat_id) if c.status == 200]
    return [row[0] for row in call.params["reply_markup"]["inline_keyboard"]]


def follow(url: str) -> tuple[int, str]:
    """GET without following the redirect: its status and Location."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.netloc, timeout=10)
    connection.request("GET", parts.path)
    response = connection.getresponse()
    return response.status, response.getheader("Location", "")


def test_clicks_count_once_per_member_and_stop_opts_out_in_the_results(
    webhook_bot, fake_telegram, clusters, live_server, admin_client
):
    members = make_members(webhook_bot, 8)
    broadcast = Broadcast.objects.create(
        bot=webhook_bot, text="Hello #first_name", buttons=[{"text": "Give", "url": "https://example.org/give"}]
    )
    MessageVersion.objects.create(
        broadcast=broadcast, arm="B", text="Hi #first_name", buttons=[{"text": "Pay", "url": "https://example.org/pay"}]
    )
    clusters.start("telegram", PUBLIC_URL=live_server.url, **FAST)
    start_broadcast.enqueue(broadcast.pk)
    wait_for(lambda: finished(broadcast), timeout=60, what="the broadcast to finish")

    arm = dict(broadcast.deliveries.values_list("chat_id", "arm"))
    in_b = [m.telegram_id for m in members if arm[m.telegram_id] == "B"]
    in_a = [m.telegram_id for m in members if arm[m.telegram_id] == "A"]
    assert len(in_a) >= 2 and len(in_b) >= 2
    # Two members of arm B click: one three times, one once; nobody of arm A.
    for chat_id, presses in [(in_b[0], 3), (in_b[1], 1)]:
        give, _stop = keyboard_of(fake_telegram, chat_id)
        assert give["url"].startswith(f"{live_server.url}/l/")
        for _ in range(presses):
            assert follow(give["url"]) == (302, "https://example.org/pay")

    # A member of arm A presses Stop under their message.
    stopper = in_a[0]
    _give, stop = keyboard_of(fake_telegram, stopper)
    press = updates.callback_query(webhook_bot.token, stop["callback_data"], user=make_user(stopper))
    fake_telegram.push_update(webhook_bot.token, press)
    (answer,) = fake_telegram.wait_for_calls(1, method="answerCallbackQuery", timeout=30)
    assert answer.params["callback_query_id"] == press["callback_query"]["id"]
    assert "/start" in answer.params["text"]
    assert not TelegramUser.objects.get(telegram_id=stopper).is_subscribed
    assert all(TelegramUser.objects.get(telegram_id=m).is_subscribed for m in arm if m != stopper)

    results = admin_client.get(f"/admin/broadcasts/broadcast/{broadcast.pk}/results.json").json()
    assert (results["sent"], results["clicks"], results["presses"], results["unsubscribed"]) == (8, 2, 4, 1)
    arms = {row["arm"]: row for row in results["arms"]}
    assert (arms["B"]["clicks"], arms["B"]["presses"], arms["B"]["unsubscribed"]) == (2, 4, 0)
    assert (arms["A"]["clicks"], arms["A"]["unsubscribed"]) == (0, 1)
    page = admin_client.get(f"/admin/broadcasts/broadcast/{broadcast.pk}/results/").content.decode()
    assert '<td data-figure="clicks">2</td>' in page and '<td data-figure="unsubscribed">1</td>' in page
