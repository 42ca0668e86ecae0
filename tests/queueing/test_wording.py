"""queueing.wording: errors and durations as the admin, the dashboard and the alerts say them."""

from datetime import timedelta

import pytest

from queueing.wording import duration, error_sentence


@pytest.mark.parametrize(
    ("error_class", "last_error", "status", "attempts", "sentence"),
    [
        (
            "permanent",
            "Forbidden: Forbidden: bot was blocked by the user",
            "failed",
            1,
            "The member blocked the bot. Failed after 1 attempt.",
        ),
        ("permanent", "BadRequest: Chat not found", "", 0, "Telegram does not know this chat."),
        (
            "permanent",
            "PermanentError: the file is too big",
            "failed",
            1,
            "It failed in a way that trying again will not fix. Failed after 1 attempt.",
        ),
        (
            "retriable",
            "NetworkError: httpx.ConnectError",
            "retrying",
            2,
            "Telegram was unreachable; it will be tried again.",
        ),
        (
            "retriable",
            "NetworkError: httpx.ConnectError",
            "failed",
            5,
            "Telegram was unreachable. Failed after 5 attempts.",
        ),
        ("retriable", "KeyError: 'chat'", "failed", 4, "It stopped with an error. Failed after 4 attempts."),
        (
            "maybe_done",
            "MaybeDone: TimedOut",
            "failed",
            1,
            "Telegram did not answer in time; the message may have arrived. Failed after 1 attempt.",
        ),
        ("rate_limited", "RateLimited: retry after 30 s", "retrying", 1, "Waiting for Telegram's flood control."),
        ("deferred", "Deferred: Try again in 5 s", "retrying", 0, "Waiting for something else to finish first."),
        ("lost", "the worker died", "queued", 2, "The worker running it stopped; it will be tried again."),
        ("", "", "succeeded", 1, ""),
        ("lost", "the broker lost it", "failed", 0, "The worker running it stopped. Failed."),
    ],
)
def test_an_error_reads_as_a_sentence_that_says_what_happens_next(error_class, last_error, status, attempts, sentence):
    assert error_sentence(error_class, last_error, status, attempts) == sentence


@pytest.mark.parametrize(
    ("span", "words"),
    [
        (0, "0 s"),
        (59.9, "59 s"),
        (60, "1 min"),
        (507, "8 min"),
        (2 * 3600 + 14 * 60 + 5, "2 h 14 min"),
        (timedelta(hours=3), "3 h"),
        (timedelta(days=3, hours=4, minutes=5), "3 d 4 h"),
        (-5, "0 s"),
    ],
)
def test_durations_read_as_people_say_them(span, words):
    assert duration(span) == words
