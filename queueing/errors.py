"""The three kinds of failure every job can end in, and the one place that sorts
exceptions into them."""

from dataclasses import dataclass
from datetime import timedelta

import telegram.error
from django.db import InterfaceError, OperationalError
from django_q.exceptions import TimeoutException

RATE_LIMITED = "rate_limited"
DEFERRED = "deferred"
RETRIABLE = "retriable"
MAYBE_DONE = "maybe_done"
PERMANENT = "permanent"


class Deferred(Exception):
    """Not now: try again in `retry_after` seconds, without counting an attempt (a busy
    lock, a member's earlier download, a service that is down)."""

    def __init__(self, retry_after: float, message: str = ""):
        super().__init__(message or f"Try again in {retry_after:.0f} s")
        self.retry_after = float(retry_after)


class RateLimited(Deferred):
    """Telegram answered 429: wait exactly `retry_after`."""

    def __init__(self, retry_after: float, message: str = ""):
        super().__init__(retry_after, message or f"Rate limited: retry after {retry_after} s")


class ServiceUnavailable(Deferred):
    """The service cannot be reached or answers 5xx: wait for it (queueing.circuit) without
    spending attempts."""


class MaybeDone(Exception):
    """The request left this process and no answer came back: it may have taken effect,
    so it must not be repeated blindly."""


class RetriableError(Exception):
    """A failure that may pass: try again after a backoff."""


class PermanentError(Exception):
    """A failure that will not pass by retrying; `user_message` is safe to show a member."""

    def __init__(self, message: str, user_message: str = ""):
        super().__init__(message)
        self.user_message = user_message


def retry_after_seconds(exc: telegram.error.RetryAfter) -> float:
    """PTB gives a timedelta (or an int, in older versions)."""
    retry_after = exc.retry_after
    return retry_after.total_seconds() if isinstance(retry_after, timedelta) else float(retry_after)


@dataclass(frozen=True)
class Classification:
    error_class: str
    retry_after: float | None = None


def classify(exc: BaseException) -> Classification:
    """Most specific first: BadRequest and TimedOut are subclasses of NetworkError."""
    if isinstance(exc, RateLimited):
        return Classification(RATE_LIMITED, exc.retry_after)
    if isinstance(exc, Deferred):
        return Classification(DEFERRED, exc.retry_after)
    if isinstance(exc, telegram.error.RetryAfter):
        return Classification(RATE_LIMITED, retry_after_seconds(exc))
    if isinstance(exc, MaybeDone):
        return Classification(MAYBE_DONE)
    if isinstance(exc, PermanentError | telegram.error.Forbidden | telegram.error.BadRequest):
        return Classification(PERMANENT)
    if isinstance(exc, telegram.error.InvalidToken | telegram.error.ChatMigrated):
        return Classification(PERMANENT)
    if isinstance(exc, RetriableError | telegram.error.TimedOut | telegram.error.NetworkError):
        return Classification(RETRIABLE)
    if isinstance(exc, OSError | TimeoutError | OperationalError | InterfaceError | TimeoutException):
        return Classification(RETRIABLE)
    # An unexpected exception may be a passing condition as well as a bug: retry it,
    # within the attempt limit, and keep the traceback for the operator.
    return Classification(RETRIABLE)
