"""The Stop button: pressing it opts the member out at once, answers the press with how to
come back, and counts as an unsubscribe on that delivery only when it is the member's own."""

import pytest

from bots import handlers
from bots.models import TelegramUser, Update
from broadcasts.models import Broadcast, Delivery
from tests.fake_telegram.objects import make_user
from tests.fake_telegram.updates import callback_query

ANN, BOB = 555_200_001, 555_200_002


@pytest.fixture
def deliveries(telegram_bot) -> dict[int, Delivery]:
    broadcast = Broadcast.objects.create(bot=telegram_bot, text="Hi")
    found = {}
    for telegram_id in (ANN, BOB):
        member = TelegramUser.objects.create(bot=telegram_bot, telegram_id=telegram_id, is_subscribed=True)
        found[telegram_id] = Delivery.objects.create(
            broadcast=broadcast, member=member, chat_id=telegram_id, status=Delivery.Status.SENT
        )
    return found


@pytest.fixture
def press(telegram_bot, fake_telegram):
    """`telegram_id` presses an inline button carrying `data`; returns the press's answer."""

    def pressed(telegram_id: int, data: str, language: str = "en") -> dict:
        payload = callback_query(telegram_bot.token, data, user=make_user(telegram_id, language_code=language))
        update = Update.objects.create(
            bot=telegram_bot, update_id=payload["update_id"], payload=payload, chat_id=telegram_id
        )
        assert handlers.handle(telegram_bot, update) == Update.Status.PROCESSED
        answers = fake_telegram.calls("answerCallbackQuery")
        assert answers[-1].params["callback_query_id"] == payload["callback_query"]["id"]
        return answers[-1].params

    return pressed


def subscribed(telegram_id: int) -> bool:
    return TelegramUser.objects.get(telegram_id=telegram_id).is_subscribed


def test_pressing_stop_opts_the_member_out_answers_how_to_come_back_and_counts_on_the_delivery(press, deliveries):
    answer = press(ANN, f"stop:{deliveries[ANN].pk}")

    assert "/start" in answer["text"] and "won't receive broadcasts" in answer["text"]
    assert not subscribed(ANN)
    assert TelegramUser.objects.get(telegram_id=ANN).opted_out_at is not None
    deliveries[ANN].refresh_from_db()
    assert deliveries[ANN].unsubscribed_at is not None
    first = deliveries[ANN].unsubscribed_at
    press(ANN, f"stop:{deliveries[ANN].pk}")
    deliveries[ANN].refresh_from_db()
    assert deliveries[ANN].unsubscribed_at == first, "the first press is the one counted"


def test_a_forged_stop_opts_out_only_the_member_who_pressed_and_counts_on_no_one_elses_delivery(press, deliveries):
    press(ANN, f"stop:{deliveries[BOB].pk}")

    assert not subscribed(ANN), "pressing Stop opts the presser out whatever the data"
    assert subscribed(BOB)
    assert not Delivery.objects.filter(unsubscribed_at__isnull=False).exists()


def test_a_test_messages_stop_button_says_so_and_opts_no_one_out(press, deliveries):
    answer = press(ANN, "stop:test")
    assert "test" in answer["text"]
    assert subscribed(ANN)


def test_a_button_nothing_is_registered_for_is_answered_without_text(press, deliveries):
    assert "text" not in press(ANN, "unknown:1")
    assert subscribed(ANN)


def test_the_answer_is_in_the_members_language(press, deliveries):
    answer = press(BOB, f"stop:{deliveries[BOB].pk}", language="fr-CA")

    assert answer["text"].startswith("Vous ne recevrez plus les annonces") and "/start" in answer["text"]
