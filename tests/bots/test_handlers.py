"""The handlers, one update at a time against the fake Telegram: for each command and each kind
of message, what the member receives and what the bot then knows about the member."""

from datetime import date, timedelta
from decimal import Decimal

import pytest
import telegram

from bots import handlers, pacing
from bots.downloads import messages
from bots.models import Download, TelegramUser, Update
from broadcasts.bot_commands import parse_amount
from broadcasts.models import Pledge
from queueing.models import JobRecord
from queueing.ratelimit import get_limiter
from tests.fake_telegram.objects import make_user
from tests.fake_telegram.updates import edited_message, my_chat_member, text_message

MEMBER_ID = 555_100_001
SORRY = f"Sorry, I didn't understand that.\n\n{handlers.HELP}"


@pytest.fixture
def send(telegram_bot, monkeypatch):
    """Hand an update to the handlers as a worker would; returns the status to record. Replies
    into a chat are not paced here (a test sends several in a second)."""
    monkeypatch.setattr(pacing, "PRIVATE_CHAT_RATE", 1000.0)

    def handle(payload: dict) -> str:
        chat_id = next(iter(payload[key] for key in payload if key != "update_id"))["chat"]["id"]
        update = Update.objects.create(
            bot=telegram_bot, update_id=payload["update_id"], payload=payload, chat_id=chat_id
        )
        return handlers.handle(telegram_bot, update)

    return handle


@pytest.fixture
def say(send, telegram_bot):
    """The member sends `text` in their private chat."""

    def message(text: str) -> str:
        return send(text_message(telegram_bot.token, text, user=make_user(MEMBER_ID, first_name="Anna")))

    return message


@pytest.fixture
def received(fake_telegram):
    """What the member received, in order."""
    return lambda: [call.params["text"] for call in fake_telegram.calls("sendMessage", chat_id=MEMBER_ID)]


def member() -> TelegramUser:
    return TelegramUser.objects.get(telegram_id=MEMBER_ID)


def test_start_subscribes_and_greets_the_member_by_name(say, received):
    assert say("/start") == Update.Status.PROCESSED

    assert received() == [
        "Hi Anna! You're subscribed to campaign updates.\nSend /pledge to see your pledge, /help for more."
    ]
    assert member().is_subscribed and member().subscribed_at is not None


def test_start_attaches_the_pledges_imported_for_the_member(say, telegram_bot):
    imported = Pledge.objects.create(bot=telegram_bot, telegram_id=MEMBER_ID, amount=Decimal("300"))

    say("/start")

    imported.refresh_from_db()
    assert imported.member == member()


def test_stop_opts_out_and_start_opts_back_in(say, received):
    say("/start")

    say("/stop")
    stopped = member()
    say("/start")

    assert received()[1] == "You won't receive broadcasts any more. Send /start whenever you want them back."
    assert not stopped.is_subscribed and stopped.opted_out_at is not None
    assert member().is_subscribed and member().opted_out_at is None


def test_help_lists_every_command_and_changes_nothing(say, received):
    say("/help")

    assert received() == [handlers.HELP]
    assert all(command in handlers.HELP for command in ("/start", "/pledge", "/stop"))
    assert not member().is_subscribed


def test_a_command_is_read_in_any_case_and_addressed_to_the_bot(say, received):
    say("/HELP@some_bot")

    assert received() == [handlers.HELP]


def test_pledge_without_a_pledge_says_how_to_make_one(say, received):
    say("/pledge")

    assert received() == ["You have no pledge yet. Send /pledge 250 to pledge 250."]


def test_pledge_shows_each_of_the_members_pledges(say, received, telegram_bot):
    say("/start")
    due = date.today() + timedelta(days=10)
    Pledge.objects.create(
        bot=telegram_bot,
        member=member(),
        telegram_id=MEMBER_ID,
        amount=Decimal("1500"),
        paid_amount=Decimal("499.50"),
        campaign="Roof",
        due_date=due,
    )
    Pledge.objects.create(bot=telegram_bot, member=member(), telegram_id=MEMBER_ID, amount=Decimal("20"))

    say("/pledge")

    assert received()[-1] == (
        f"Pledge: 1,500 USD (Roof)\nPaid: 499.50 USD\nBalance: 1,000.50 USD\nDue: {due:%d %b %Y}, 10 days remaining"
        "\n\nPledge: 20 USD\nPaid: 0 USD\nBalance: 20 USD"
    )


def test_pledge_with_an_amount_records_it(say, received):
    say("/pledge 1,250.50")

    assert received() == ["Thank you! I recorded your pledge of 1,250.50 USD."]
    assert list(member().pledges.values_list("amount", "telegram_id")) == [(Decimal("1250.50"), MEMBER_ID)]


def test_pledge_with_something_else_than_an_amount_records_nothing(say, received):
    say("/pledge lots")

    assert received() == ["I couldn't read “lots” as an amount. Send a number, for example /pledge 250."]
    assert not Pledge.objects.exists()


@pytest.mark.parametrize(
    ("text", "amount"),
    [
        ("250", Decimal("250")),
        ("$ 99.50", Decimal("99.50")),
        ("1,000", Decimal("1000")),
        ("0", None),
        ("-5", None),
        ("1,00", None),
        ("2.505", None),
        ("1000000000", None),
        ("ten", None),
    ],
)
def test_an_amount_is_a_positive_number_below_a_billion_with_at_most_cents(text, amount):
    assert parse_amount(text) == amount


def test_a_link_is_queued_for_download_with_a_progress_message(say, received):
    assert say("look: https://Media.Example/clip.mp4#t=3") == Update.Status.PROCESSED

    assert received() == [messages.STARTING]
    download = Download.objects.get()
    assert (download.member, download.url, download.status) == (member(), "https://media.example/clip.mp4", "waiting")
    assert download.message_id is not None
    assert (download.job.kind, download.job.status) == ("bots.tasks.download_media", JobRecord.Status.QUEUED)


def test_a_link_without_a_scheme_is_read_as_https(send, telegram_bot):
    user = make_user(MEMBER_ID)
    send(text_message(telegram_bot.token, "example.org/a", user=user, entities=[_entity("url", 0, 13)]))

    assert Download.objects.get().url == "https://example.org/a"


def test_an_unknown_command_gets_the_help_and_changes_nothing(say, received):
    say("/frobnicate now")

    assert received() == [SORRY]
    assert not member().is_subscribed and not Download.objects.exists()


def test_a_message_without_text_gets_the_help(send, telegram_bot, received):
    payload = text_message(telegram_bot.token, "", user=make_user(MEMBER_ID))
    message = payload["message"]
    del message["text"]
    message["photo"] = [{"file_id": "AgAD", "file_unique_id": "AQAD", "width": 90, "height": 60}]

    assert send(payload) == Update.Status.PROCESSED

    assert received() == [SORRY]


def test_a_caption_is_read_like_a_text(send, telegram_bot, received):
    payload = text_message(telegram_bot.token, "", user=make_user(MEMBER_ID))
    message = payload["message"]
    del message["text"]
    message["photo"] = [{"file_id": "AgAD", "file_unique_id": "AQAD", "width": 90, "height": 60}]
    message["caption"] = "/help"

    send(payload)

    assert received() == [handlers.HELP]


def test_an_edited_message_is_ignored(send, telegram_bot, received):
    original = text_message(telegram_bot.token, "hello", user=make_user(MEMBER_ID))

    assert send(edited_message(telegram_bot.token, "/start", original=original)) == Update.Status.IGNORED

    assert received() == []
    assert not TelegramUser.objects.exists()


def test_a_message_in_a_group_is_ignored(send, telegram_bot, received):
    group = {"id": -100_200, "type": "group", "title": "Friends"}

    assert send(text_message(telegram_bot.token, "/start", user=make_user(MEMBER_ID), chat=group)) == "ignored"

    assert received() == []


def test_blocking_the_bot_marks_the_member_blocked_and_unblocking_unmarks(send, telegram_bot, say, received):
    say("/start")
    user = make_user(MEMBER_ID)

    send(my_chat_member(telegram_bot.token, "kicked", user=user))
    blocked = member()
    send(my_chat_member(telegram_bot.token, "member", user=user))

    assert blocked.is_blocked and blocked.blocked_at is not None
    assert not member().is_blocked and member().is_subscribed
    assert len(received()) == 1


def test_a_reply_answered_429_pauses_the_bot_for_every_process(say, fake_telegram, telegram_bot):
    throttled = get_limiter().throttled().get(f"bot:{telegram_bot.pk}", 0)
    fake_telegram.fail("rate_limit", method="sendMessage", retry_after=1, times=1)

    with pytest.raises(telegram.error.RetryAfter):
        say("/help")

    assert get_limiter().throttled()[f"bot:{telegram_bot.pk}"] == throttled + 1


def test_a_reply_refused_because_the_member_blocked_the_bot_marks_them_blocked(say, fake_telegram):
    fake_telegram.fail("blocked", method="sendMessage", times=1)

    with pytest.raises(telegram.error.Forbidden):
        say("/help")

    assert member().is_blocked


def _entity(kind: str, offset: int, length: int) -> dict:
    return {"type": kind, "offset": offset, "length": length}
