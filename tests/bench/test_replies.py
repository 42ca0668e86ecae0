"""bench.replies times and counts the replies to /start, not the broadcast sent meanwhile: a
member whose /start subscribed them before the broadcast's fan-out reached them gets both."""

import pytest

from bench.replies import figures
from broadcasts.models import STOP_BUTTON_TEXT
from broadcasts.unsubscribe import callback_data
from tests.fake_telegram.records import Call

MEMBER, REPLIER, OTHER_REPLIER = 10_000_000, 30_000_000, 30_000_001


def accepted(chat_id: int, at: float, text: str = "Hi Bench! You're subscribed to campaign updates.") -> Call:
    params = {"chat_id": chat_id, "text": text}
    return Call("sendMessage", "token", params, [], received_at=at, answered_at=at, status=200)


def broadcast_message(chat_id: int, at: float) -> Call:
    call = accepted(chat_id, at, text="Hello Bench, thank you for your support!")
    call.params["reply_markup"] = {"inline_keyboard": [[{"text": STOP_BUTTON_TEXT, "callback_data": callback_data(7)}]]}
    return call


def test_a_replier_who_also_got_the_broadcast_was_answered_once():
    stored = {REPLIER: 100.0, OTHER_REPLIER: 100.5}
    calls = [
        accepted(REPLIER, 100.1),
        broadcast_message(MEMBER, 100.3),
        accepted(OTHER_REPLIER, 100.7),
        broadcast_message(REPLIER, 130.0),
    ]
    notes: list[str] = []

    result = figures(calls, stored, set(stored), notes)

    assert notes == ["1 repliers also got the broadcast (subscribed before its fan-out)"]
    assert result["replied"] == 2
    assert result["max_ms"] == pytest.approx(200)
    assert (result["broadcast_during"], result["broadcast_sent"]) == (1, 2)


def test_a_reply_sent_twice_is_reported():
    stored = {REPLIER: 100.0, OTHER_REPLIER: 100.5}
    calls = [accepted(REPLIER, 100.1), accepted(OTHER_REPLIER, 100.7), accepted(REPLIER, 101.0)]
    notes: list[str] = []

    figures(calls, stored, set(stored), notes)

    assert notes == ["1 replies sent twice"]
