"""Errors and durations in words for operators: the admin, the dashboard and the alerts say
them the same way. The technical text stays available next to the sentence, never instead."""

from datetime import timedelta

from queueing.errors import DEFERRED, MAYBE_DONE, PERMANENT, RATE_LIMITED, RETRIABLE
from queueing.models import LOST

# Telegram's own wording (lower case) -> what it means for the operator; first match wins.
TELEGRAM_REFUSALS = [
    ("blocked by the user", "The member blocked the bot"),
    ("user is deactivated", "The member deleted their Telegram account"),
    ("chat not found", "Telegram does not know this chat"),
    ("kicked from", "The bot was removed from the chat"),
    ("not enough rights", "The bot may not write in this chat"),
    ("message is too long", "The message is too long for Telegram"),
    ("invalidtoken", "Telegram refused the bot's token"),
    ("unauthorized", "Telegram refused the bot's token"),
]

CAUSES = {
    RATE_LIMITED: "Waiting for Telegram's flood control",
    DEFERRED: "Waiting for something else to finish first",
    MAYBE_DONE: "Telegram did not answer in time; the message may have arrived",
    LOST: "The worker running it stopped",
    PERMANENT: "It failed in a way that trying again will not fix",
}
UNREACHABLE = ("networkerror", "connect", "unreachable", "service unavailable", "bad gateway", "timed out")


def cause(error_class: str, last_error: str) -> str:
    """What went wrong, in a sentence without a full stop."""
    text = (last_error or "").lower()
    if error_class in (RATE_LIMITED, DEFERRED, MAYBE_DONE, LOST):
        return CAUSES[error_class]
    for words, meaning in TELEGRAM_REFUSALS:
        if words in text:
            return meaning
    if error_class == PERMANENT:
        return CAUSES[PERMANENT]
    if any(words in text for words in UNREACHABLE):
        return "Telegram was unreachable"
    return "It stopped with an error" if error_class == RETRIABLE else "It went wrong"


def error_sentence(error_class: str, last_error: str, status: str = "", attempts: int = 0) -> str:
    """The error of a job (or a delivery) for people. `status` says what happens next: a
    waiting one "will be tried again", a failed one "failed after N attempts"; without a
    status (a delivery's own wording) only the cause is said."""
    if not error_class and not last_error:
        return ""
    said = cause(error_class, last_error)
    if status == "failed" and attempts < 1:  # failed before it ever ran (a lost dispatch)
        return f"{said}. Failed."
    if status == "failed":
        plural = "s" if attempts != 1 else ""
        return f"{said}. Failed after {attempts} attempt{plural}."
    if status in ("retrying", "queued") and error_class not in (RATE_LIMITED, DEFERRED):
        return f"{said}; it will be tried again."
    return f"{said}."


# What a failed job's error class means once it has failed: "retriable" would say the opposite.
FAILED_AS = {
    RATE_LIMITED: "flood control",
    DEFERRED: "waited in vain",
    RETRIABLE: "errors, out of attempts",
    MAYBE_DONE: "no answer (may have taken effect)",
    PERMANENT: "refused, not retried",
    LOST: "worker died, out of attempts",
}


def failed_as(error_class: str) -> str:
    """How a group of failed jobs of one error class is named (the dashboard's table)."""
    return FAILED_AS.get(error_class, error_class or "no error recorded")


def duration(span: timedelta | float) -> str:
    """A span (or a number of seconds) as people say it: "45 s", "12 min", "2 h 14 min", "3 d 4 h"."""
    seconds = max(int(span.total_seconds() if isinstance(span, timedelta) else span), 0)
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"
