"""The webhook answers every input the way DESIGN.md says, and stores each update once."""

import json
import socket
from datetime import timedelta

import pytest
from django.db import connection
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


def with_x(value: str) -> str:
    return '{"update_id": 4, "x": ' + value + "}"


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


def test_a_body_of_one_mebibyte_is_taken_and_one_byte_more_is_413(client, bot):
    body = json.dumps(message(update_id=3, text="")).replace('"text": ""', '"text": "%s"')
    exactly = body % ("x" * (1024 * 1024 - len(body) + 2))

    assert post(client, 123456, exactly.encode()).status_code == 200
    assert post(client, 123456, exactly.replace('"update_id": 3', '"update_id": 30')).status_code == 413
    assert list(Update.objects.values_list("update_id", flat=True)) == [3]


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
        ({"update_id": 2**63}, "out of range"),
        ({"update_id": -(2**63) - 1}, "out of range"),
        ('{"update_id": ' + "9" * 4000 + "}", "out of range"),
        (message(chat_id=2**63), "chat id"),
        (message(chat_id=-(2**63) - 1), "chat id"),
        (message(chat_id=True), "chat id"),
        (message(chat_id=1.5), "chat id"),
        ({"update_id": 4, "callback_query": {"id": "1", "from": {"id": False}}}, "sender id"),
        ('{"update_id": 4, "x": NaN}', "non-finite"),
        ('{"update_id": 4, "x": [Infinity]}', "non-finite"),
        ('{"update_id": 4, "x": {"y": -Infinity}}', "non-finite"),
        ('{"update_id": 4, "x": 1e400}', "out of range"),
        ('{"update_id": 4, "x": -1e400}', "out of range"),
        # Python reads these as 0.0; PostgreSQL's numeric refuses them.
        ('{"update_id": 4, "x": 1e-100000}', "out of range"),
        (with_x("0." + "0" * 17000 + "1"), "out of range"),
        (with_x("[" * 40 + "]" * 40), "nested"),
        (with_x("[" * 5000 + "]" * 5000), "nested"),
        (with_x('{"a": ' * 5000 + "1" + "}" * 5000), "nested"),
    ],
)
def test_malformed_bodies_are_400_with_a_reason(client, bot, body, reason):
    response = post(client, 123456, body)

    assert response.status_code == 400
    assert reason in response.json()["error"]
    assert not Update.objects.exists()


def test_ids_at_the_edges_of_the_bigint_columns_are_stored(client, bot):
    assert post(client, 123456, message(update_id=2**63 - 1, chat_id=-(2**63))).status_code == 200

    assert Update.objects.values_list("update_id", "chat_id").get() == (2**63 - 1, -(2**63))


def test_nesting_as_deep_as_a_real_update_is_stored(client, bot):
    update = message(update_id=8)
    update["message"]["x"] = json.loads("[" * 30 + "]" * 30)

    assert post(client, 123456, update).status_code == 200


def test_a_lone_surrogate_is_stored_as_the_replacement_character_and_pairs_are_kept(client, bot):
    # PostgreSQL refuses a lone surrogate; U+FFFD keeps the UTF-16 length entity offsets count in.
    body = json.dumps(message(update_id=13, text="/start PAIR LONE ok"))
    body = body.replace("PAIR", r"\ud83d\ude00").replace("LONE", r"\ud800 \udc00 \\ud800 \\ud800\udc00")

    assert post(client, 123456, body).status_code == 200

    stored = Update.objects.get().payload["message"]
    assert stored["text"] == "/start \U0001f600 \ufffd \ufffd \\ud800 \\ud800\ufffd ok", "an escaped backslash is text"


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/jsonx", ""],
)
def test_a_body_that_is_not_sent_as_json_is_415(client, bot, content_type):
    response = post(client, 123456, message(), content_type=content_type)

    assert response.status_code == 415
    assert "application/json" in response.json()["error"]
    assert not Update.objects.exists()


def test_json_with_a_charset_is_taken(client, bot):
    assert post(client, 123456, message(), content_type="application/json; charset=utf-8").status_code == 200


def test_a_content_length_that_is_not_a_number_is_read_as_none(client, bot):
    headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
    response = client.generic(
        "POST", "/telegram/123456/webhook/", b"{}", "application/json", headers=headers, CONTENT_LENGTH="many"
    )

    assert response.status_code == 400


def test_an_unavailable_database_is_503_so_telegram_delivers_the_update_again(
    client, bot, transactional_db, monkeypatch, tmp_path
):
    assert post(client, 123456, message(update_id=1)).status_code == 200  # the bot is cached
    with monkeypatch.context() as patch:
        connection.close()
        if connection.vendor == "sqlite":
            patch.setitem(connection.settings_dict, "NAME", str(tmp_path / "missing" / "db.sqlite3"))
        else:
            patch.setitem(connection.settings_dict, "PORT", str(_closed_port()))

        response = post(client, 123456, message(update_id=2))

        assert response.status_code == 503
        assert "database" in response.json()["error"]
        views._bots.clear()
        assert post(client, 123456, message(update_id=2)).status_code == 503, "looking up the bot too"
        connection.close()
    assert list(Update.objects.values_list("update_id", flat=True)) == [1]


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


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
