"""Real updates, from other Telegram libraries' public test fixtures (tests/fixtures/updates/
SOURCES.md says where each comes from), replayed through the webhook and the handlers: each is
taken, and each ends processed, ignored or failed with a reason, never with an error that would
be retried, and never with a Bot API call Telegram would refuse."""

import json
from pathlib import Path

import pytest

from bots import handlers
from bots.models import TelegramUser, Update
from bots.tasks import handle_update
from queueing.errors import PermanentError

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "updates"
UPDATES = sorted(CORPUS.glob("*/*.json"))


def kind_of(payload: dict) -> str:
    return next(key for key in payload if key != "update_id")


def corpus(name: str) -> dict:
    return json.loads((CORPUS / name).read_text())


def replay(client, bot, body: Path | dict) -> tuple[str, str]:
    """(status, reason) of an update after the webhook and the handlers."""
    headers = {"X-Telegram-Bot-Api-Secret-Token": bot.webhook_secret}
    data = body.read_bytes() if isinstance(body, Path) else json.dumps(body)
    response = client.post(bot.webhook_path(), data, content_type="application/json", headers=headers)
    assert response.status_code == 200, response.content
    update = Update.objects.select_related("bot").get()
    try:
        return handlers.handle(update.bot, update), ""
    except PermanentError as exc:
        return Update.Status.FAILED, str(exc)


def test_the_corpus_holds_many_kinds_of_real_update_each_with_its_source():
    kinds = {kind_of(json.loads(path.read_text())) for path in UPDATES}
    message_kinds = {
        next(key for key in payload["message"] if key not in ("message_id", "from", "chat", "date"))
        for payload in (json.loads(path.read_text()) for path in UPDATES)
        if "message" in payload
    }
    sources = (CORPUS / "SOURCES.md").read_text()

    assert len(UPDATES) >= 60
    assert len(kinds) >= 20, kinds
    assert len(message_kinds) >= 30, message_kinds
    assert [path for path in UPDATES if f"`{path.parent.name}/{path.name}`" not in sources] == []


@pytest.mark.parametrize("path", UPDATES, ids=lambda path: f"{path.parent.name}/{path.stem}")
def test_a_real_update_is_taken_and_handled_or_failed_with_a_reason(client, telegram_bot, fake_telegram, path):
    status, reason = replay(client, telegram_bot, path)

    assert status in (Update.Status.PROCESSED, Update.Status.IGNORED) or (status == Update.Status.FAILED and reason)
    refused = [(call.method, call.params, call.response) for call in fake_telegram.calls() if not call.ok]
    assert refused == []


def test_a_my_chat_member_from_before_can_post_stories_is_ignored_in_a_group(client, telegram_bot, fake_telegram):
    # python-telegram-bot 22.8 cannot read it (TypeError: can_post_stories and two more missing).
    assert replay(client, telegram_bot, CORPUS / "cal-calc-tg-bot/my_chat_member.json") == (Update.Status.IGNORED, "")
    assert fake_telegram.calls() == []


@pytest.mark.parametrize(
    "name", ["nutgram/poll.json", "teloxide/new_update_kind_error.json", "nutgram/pinned_message.json"]
)
def test_a_poll_an_unknown_kind_and_a_service_message_are_ignored(client, telegram_bot, fake_telegram, name):
    assert replay(client, telegram_bot, CORPUS / name) == (Update.Status.IGNORED, "")
    assert [call.method for call in fake_telegram.calls()] in ([], ["getMe"])


def test_a_start_in_an_update_the_library_cannot_read_is_still_answered(client, telegram_bot, fake_telegram):
    # A /start replying to a poll: python-telegram-bot 22.8 refuses the poll (no members_only).
    update = corpus("nutgram/command.json")
    update["message"]["text"] = "/start"
    update["message"]["entities"][0]["length"] = len("/start")
    update["message"]["reply_to_message"] = corpus("nutgram/message_poll.json")["message"]

    assert replay(client, telegram_bot, update) == (Update.Status.PROCESSED, "")

    [reply] = fake_telegram.calls("sendMessage")
    assert (reply.ok, reply.chat_id) == (True, update["message"]["chat"]["id"])
    assert "subscribed" in reply.params["text"]
    assert TelegramUser.objects.get(telegram_id=update["message"]["from"]["id"]).is_subscribed


def test_an_update_whose_read_fields_are_unreadable_fails_at_once_with_the_reason(client, telegram_bot, fake_telegram):
    update = corpus("nutgram/command.json")
    del update["message"]["from"]["first_name"]

    status, reason = replay(client, telegram_bot, update)

    assert status == Update.Status.FAILED
    assert "cannot read this message" in reason and "first_name" in reason
    assert fake_telegram.calls("sendMessage") == []


@pytest.mark.parametrize(
    ("name", "status"),
    [("nutgram/poll.json", Update.Status.IGNORED), ("nutgram/message_poll.json", Update.Status.PROCESSED)],
)
def test_the_handling_job_records_the_status_the_handlers_return(client, telegram_bot, fake_telegram, name, status):
    headers = {"X-Telegram-Bot-Api-Secret-Token": telegram_bot.webhook_secret}
    client.post(telegram_bot.webhook_path(), corpus(name), content_type="application/json", headers=headers)

    handle_update(Update.objects.get().pk)

    update = Update.objects.get()
    assert (update.status, update.error, update.attempts) == (status, "", 0)
