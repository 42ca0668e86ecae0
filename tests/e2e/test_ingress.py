"""Members talking to the bot: the fake Telegram posts updates to the webhook of a live
server, a real `telegram` qcluster handles them, replies arrive at the fake Telegram."""

import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.conf import settings

from bots.inbox import dispatch_received
from bots.models import TelegramUser, Update
from broadcasts.models import Pledge
from queueing.models import JobRecord
from tests.clusters import ROOT, cluster_env
from tests.fake_telegram import make_user, updates
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e


def replies_to(fake, chat_id: int, n: int, timeout: float = 20) -> list[str]:
    calls = fake.wait_for_calls(n, method="sendMessage", chat_id=chat_id, timeout=timeout)
    return [call.params["text"] for call in calls]


def all_handled() -> bool:
    return not Update.objects.filter(status__in=[Update.Status.RECEIVED, Update.Status.ENQUEUED]).exists()


def test_the_webhook_is_set_with_the_bots_secret(webhook_bot, fake_telegram, live_server):
    webhook = fake_telegram.webhook(webhook_bot.token)
    assert webhook["url"] == f"{live_server.url}/telegram/{webhook_bot.telegram_id}/webhook/"
    assert webhook["secret_token"] == webhook_bot.webhook_secret


def test_a_member_subscribes_pledges_opts_out_and_comes_back(webhook_bot, fake_telegram, clusters):
    clusters.start("telegram")
    ann = make_user(501, first_name="Ann")

    for text in ["/start", "/pledge", "/pledge 250", "/pledge", "/stop", "/start"]:
        fake_telegram.push_update(webhook_bot.token, updates.text_message(webhook_bot.token, text, user=ann))

    replies = replies_to(fake_telegram, 501, 6)
    assert replies[0].startswith("Hi Ann! You're subscribed")
    assert replies[1] == "You have no pledge yet. Send /pledge 250 to pledge 250."
    assert replies[2] == "Thank you! I recorded your pledge of 250 USD."
    assert replies[3] == "Pledge: 250 USD\nPaid: 0 USD\nBalance: 250 USD"
    assert replies[4].startswith("You won't receive broadcasts any more")
    assert replies[5].startswith("Hi Ann!")
    member = TelegramUser.objects.get(telegram_id=501)
    assert member.is_subscribed and member.opted_out_at is None
    assert Pledge.objects.get(member=member).amount == 250
    wait_for(all_handled, what="every update to be marked handled")
    assert set(Update.objects.values_list("status", flat=True)) == {Update.Status.PROCESSED}


def test_an_update_posted_three_times_is_handled_once(webhook_bot, fake_telegram, clusters, live_server):
    clusters.start("telegram")
    update = updates.text_message(webhook_bot.token, "/help", user=make_user(502))
    url = live_server.url + webhook_bot.webhook_path()

    statuses = [fake_telegram.post_update(url, update, webhook_bot.webhook_secret) for _ in range(3)]

    assert statuses == [200, 200, 200]
    replies_to(fake_telegram, 502, 1)
    wait_for(all_handled, what="the update to be handled")
    assert fake_telegram.count("sendMessage", chat_id=502) == 1
    assert Update.objects.count() == 1


def test_fifty_members_sending_ten_messages_each_get_every_reply_in_order(
    webhook_bot, fake_telegram, clusters, live_server
):
    clusters.start("telegram")
    url = live_server.url + webhook_bot.webhook_path()
    members = [make_user(10_000 + n) for n in range(50)]

    def converse(user: dict) -> list[int]:
        return [
            fake_telegram.post_update(
                url, updates.text_message(webhook_bot.token, f"/pledge {n}", user=user), webhook_bot.webhook_secret
            )
            for n in range(1, 11)
        ]

    with ThreadPoolExecutor(max_workers=50) as pool:
        statuses = [status for result in pool.map(converse, members) for status in result]

    assert statuses == [200] * 500
    # Paced at one reply a second per chat; a machine busy with the rest of the suite takes longer.
    fake_telegram.wait_for_calls(500, method="sendMessage", timeout=180)
    for user in members:
        texts = [call.params["text"] for call in fake_telegram.calls("sendMessage", chat_id=user["id"])]
        assert texts == [f"Thank you! I recorded your pledge of {n} USD." for n in range(1, 11)], user["id"]
    assert Pledge.objects.count() == 500


def test_real_update_shapes_are_handled_without_error(webhook_bot, fake_telegram, clusters):
    clusters.start("telegram")
    token = webhook_bot.token
    bob = make_user(503, first_name="Bob")
    shapes = [
        updates.text_message(token, "/start@some_bot deep-link-payload", user=bob),
        updates.text_message(token, "look at https://example.org/video.mp4 please", user=bob),
        updates.edited_message(token, "edited text", user=bob),
        updates.channel_post(token, "a post in a channel"),
        updates.callback_query(token, "button-data", user=bob),
        updates.my_chat_member(token, "kicked", user=bob),
        updates.my_chat_member(token, "member", user=bob),
        updates.text_message(token, "hello there", user=bob),
    ]
    for update in shapes:
        fake_telegram.push_update(token, update)

    wait_for(lambda: Update.objects.count() == len(shapes), what="every update to be stored")
    wait_for(all_handled, timeout=30, what="every update to be handled")
    statuses = dict(Update.objects.values_list("update_id", "status"))
    assert [statuses[update["update_id"]] for update in shapes] == [
        Update.Status.IGNORED if "edited_message" in update or "channel_post" in update else Update.Status.PROCESSED
        for update in shapes
    ]
    replies = replies_to(fake_telegram, 503, 3)
    assert replies[0].startswith("Hi Bob!")
    assert replies[1] == "Downloading…"
    assert replies[2].startswith("Sorry, I didn't understand that.")
    assert fake_telegram.count("answerCallbackQuery") == 1
    assert not TelegramUser.objects.get(telegram_id=503).is_blocked


def test_kicking_the_bot_marks_the_member_blocked(webhook_bot, fake_telegram, clusters):
    clusters.start("telegram")
    cat = make_user(504)
    fake_telegram.push_update(webhook_bot.token, updates.text_message(webhook_bot.token, "/start", user=cat))
    replies_to(fake_telegram, 504, 1)

    fake_telegram.push_update(webhook_bot.token, updates.my_chat_member(webhook_bot.token, "kicked", user=cat))

    wait_for(lambda: TelegramUser.objects.get(telegram_id=504).is_blocked, what="the member to be marked blocked")


def test_a_reply_refused_with_403_marks_the_member_blocked_and_is_not_retried(webhook_bot, fake_telegram, clusters):
    clusters.start("telegram")
    fake_telegram.fail("blocked", chat_id=505)

    fake_telegram.push_update(webhook_bot.token, updates.text_message(webhook_bot.token, "/start", user=make_user(505)))

    wait_for(lambda: Update.objects.filter(status=Update.Status.FAILED).exists(), what="the update to fail")
    assert "Forbidden" in Update.objects.get().error
    assert TelegramUser.objects.get(telegram_id=505).is_blocked
    assert fake_telegram.count("sendMessage", chat_id=505, answered=True) == 1


def test_a_reply_that_hits_a_server_error_is_retried(webhook_bot, fake_telegram, clusters):
    clusters.start("telegram", QUEUE_TELEGRAM_BACKOFF="0.5")
    fake_telegram.fail("server_error", chat_id=506, times=1)

    fake_telegram.push_update(webhook_bot.token, updates.text_message(webhook_bot.token, "/help", user=make_user(506)))

    wait_for(Update.objects.exists, what="the update to be stored")
    wait_for(all_handled, what="the update to be handled")
    assert Update.objects.get().status == Update.Status.PROCESSED
    assert fake_telegram.count("sendMessage", chat_id=506) == 2


@pytest.mark.skipif(not settings.REDIS_URL, reason="with the ORM broker, broker down means database down")
def test_an_update_dispatched_while_redis_is_down_is_kept_and_handled_later(
    webhook_bot, fake_telegram, clusters, live_server, monkeypatch
):
    from queueing import jobs as queue_jobs
    from tests.clusters import UnreachableRedis

    update = updates.text_message(webhook_bot.token, "/help", user=make_user(507))
    url = live_server.url + webhook_bot.webhook_path()
    assert fake_telegram.post_update(url, update, webhook_bot.webhook_secret) == 200

    monkeypatch.setattr(queue_jobs, "broker_for", lambda queue: UnreachableRedis(queue))
    assert dispatch_received() == 1
    job = JobRecord.objects.get()
    assert job.dispatched_at is None, "the push failed, so the job waits for housekeeping"
    monkeypatch.undo()
    clusters.start("telegram")

    replies_to(fake_telegram, 507, 1)
    wait_for(all_handled, what="the kept update to be handled")


def test_runbot_polling_feeds_the_same_inbox_and_queue(telegram_bot, fake_telegram, clusters, tmp_path):
    clusters.start("telegram")
    log = (tmp_path / "runbot.log").open("wb")
    runbot = subprocess.Popen(
        [sys.executable, "manage.py", "runbot", "--polling", "--timeout", "1", "--bot", str(telegram_bot.telegram_id)],
        cwd=ROOT,
        env=cluster_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        ann = make_user(508, first_name="Ann")
        for text in ["/start", "/pledge 40", "/pledge"]:
            fake_telegram.push_update(telegram_bot.token, updates.text_message(telegram_bot.token, text, user=ann))

        replies = replies_to(fake_telegram, 508, 3)
        wait_for(lambda: not fake_telegram.pending_updates(telegram_bot.token), what="getUpdates to confirm")
    finally:
        runbot.send_signal(signal.SIGINT)
        runbot.wait(10)
    assert replies[0].startswith("Hi Ann!")
    assert replies[1] == "Thank you! I recorded your pledge of 40 USD."
    assert replies[2] == "Pledge: 40 USD\nPaid: 0 USD\nBalance: 40 USD"
    assert Update.objects.count() == 3
    assert fake_telegram.count("deleteWebhook") == 1
    assert "Stopped." in (tmp_path / "runbot.log").read_text()
