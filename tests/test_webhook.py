"""The webhook answers every input the way DESIGN.md says, and stores each update once."""

import json
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from bots import views
from bots.inbox import dispatch_received
from bots.models import Bot, Update
from queueing.models import JobRecord

SECRET = "s3cret-token_value"


@pytest.fixture
def bot(db):
    views._bots.clear()
    yield Bot.objects.create(token="123456:AAE-secret", webhook_secret=SECRET)
    views._bots.clear()


def post(client, bot_id, body, secret=SECRET, content_type="application/json"):
    headers = {"X-Telegram-Bot-Api-Secret-Token": secret} if secret is not None else {}
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    return client.post(f"/telegram/{bot_id}/webhook/", data=data, content_type=content_type, headers=headers)


def message(update_id=1, chat_id=42, text="/start"):
    user = {"id": chat_id, "is_bot": False, "first_name": "Ann"}
    return {
        "update_id": update_id,
        "message": {
            "message_id": 7,
            "date": 1_700_000_000,
            "chat": {"id": chat_id, "type": "private", "first_name": "Ann"},
            "from": user,
            "text": text,
            "entities": [{"type": "bot_command", "offset": 0, "length": len(text)}],
        },
    }


def test_the_url_is_named_by_the_digits_before_the_colon(bot):
    assert reverse("bots:webhook", args=[123456]) == "/telegram/123456/webhook/" == bot.webhook_path()


def test_a_valid_update_is_stored_as_received_and_answered_200(client, bot):
    response = post(client, 123456, message(update_id=10, chat_id=42))

    assert response.status_code == 200
    update = Update.objects.get()
    assert (update.update_id, update.chat_id, update.status) == (10, 42, Update.Status.RECEIVED)
    assert update.payload == message(update_id=10, chat_id=42)
    assert abs(timezone.now() - update.received_at) < timedelta(minutes=1)
    assert (update.attempts, update.error) == (0, "")
    assert not JobRecord.objects.exists(), "enqueueing is the dispatcher's work, not the request's"


def test_the_dispatcher_enqueues_received_updates_once(client, bot):
    post(client, 123456, message(update_id=10, chat_id=42))
    update = Update.objects.get()

    assert dispatch_received() == 1
    assert dispatch_received() == 0

    update.refresh_from_db()
    assert update.status == Update.Status.ENQUEUED
    job = JobRecord.objects.get()
    assert (job.kind, job.queue, job.args) == ("bots.tasks.handle_update", "telegram", [update.pk])
    assert job.label == "update 10 chat 42"


def test_the_dispatcher_enqueues_one_job_per_chat_starting_at_its_oldest_update(client, bot):
    for update_id, chat_id in [(21, 42), (20, 42), (22, 43), (23, 42)]:
        post(client, 123456, message(update_id=update_id, chat_id=chat_id))
    post(client, 123456, {"update_id": 24, "poll": {"id": "p", "question": "?", "options": []}})

    assert dispatch_received() == 5

    pks = dict(Update.objects.values_list("update_id", "pk"))
    jobs = {job.label: job.args for job in JobRecord.objects.all()}
    assert jobs == {
        "update 20 and 2 more chat 42": [pks[20]],
        "update 22 chat 43": [pks[22]],
        "update 24": [pks[24]],
    }
    assert set(Update.objects.values_list("status", flat=True)) == {Update.Status.ENQUEUED}


def test_a_nul_character_is_stored_as_the_replacement_character_so_every_database_accepts_it(client, bot):
    # PostgreSQL's jsonb refuses \u0000; a 500 would make Telegram redeliver the update forever.
    # U+FFFD keeps the text's length, so message entity offsets still point at the same characters.
    update = message(update_id=12, text="/start \x00 ok")
    update["message"]["from"]["first_name"] = "A\x00nn"

    assert post(client, 123456, update).status_code == 200

    stored = Update.objects.get().payload["message"]
    assert (stored["text"], stored["from"]["first_name"]) == ("/start \ufffd ok", "A\ufffdnn")
    assert stored["entities"] == update["message"]["entities"]


def test_a_redelivered_update_is_answered_200_and_stored_once(client, bot):
    for _ in range(3):
        assert post(client, 123456, message(update_id=11)).status_code == 200

    assert Update.objects.count() == 1
    dispatch_received()
    assert JobRecord.objects.count() == 1


@pytest.mark.parametrize("secret", [None, "", "wrong", SECRET + "x"])
def test_a_missing_or_wrong_secret_is_403(client, bot, secret):
    response = post(client, 123456, message(), secret=secret)

    assert response.status_code == 403
    assert not Update.objects.exists()


def test_an_unknown_bot_is_404(client, bot):
    assert post(client, 999, message()).status_code == 404


def test_an_inactive_bot_is_404(client, bot):
    Bot.objects.filter(pk=bot.pk).update(is_active=False)
    assert post(client, 123456, message()).status_code == 404


def test_a_body_over_one_mebibyte_is_413(client, bot):
    huge = message(text="x" * (1024 * 1024))

    response = post(client, 123456, huge)

    assert response.status_code == 413
    assert not Update.objects.exists()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        ("[1, 2]", "JSON object"),
        ('"text"', "JSON object"),
        ({"message": {}}, "update_id"),
        ({"update_id": "12"}, "update_id"),
        ({"update_id": 1.5}, "update_id"),
        ({"update_id": True}, "update_id"),
    ],
)
def test_malformed_bodies_are_400_with_a_reason(client, bot, body, reason):
    response = post(client, 123456, body)

    assert response.status_code == 400
    assert reason in response.json()["error"]
    assert not Update.objects.exists()


@pytest.mark.parametrize("method", ["get", "put", "delete"])
def test_other_methods_are_405(client, bot, method):
    response = getattr(client, method)("/telegram/123456/webhook/")
    assert response.status_code == 405


def test_updates_without_a_chat_are_stored_with_none(client, bot):
    inline = {
        "update_id": 5,
        "inline_query": {"id": "1", "from": {"id": 9, "is_bot": False}, "query": "", "offset": ""},
    }
    poll = {"update_id": 6, "poll": {"id": "p", "question": "?", "options": []}}

    assert post(client, 123456, inline).status_code == 200
    assert post(client, 123456, poll).status_code == 200

    assert dict(Update.objects.values_list("update_id", "chat_id")) == {5: 9, 6: None}


def test_the_webhook_makes_no_bot_api_call_and_few_queries(client, bot, django_assert_max_num_queries):
    post(client, 123456, message(update_id=1))  # warms the bot cache
    with django_assert_max_num_queries(1):
        assert post(client, 123456, message(update_id=2)).status_code == 200
