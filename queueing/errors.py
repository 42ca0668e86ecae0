"""The three kinds of failure every job can end in, and the one place that sorts
exceptions into them."""

from dataclasses import dataclass
from datetime import timedelta

import telegram.error
from django.db import InterfaceError, OperationalError
from django_q.exceptions import TimeoutException

RATE_LIMITED = "rate_limited"
RETRIABLE = "retriable"
PERMANENT = "permanent"


class RateLimited(Exception):
    def __init__(self, retry_after: float, message: str = ""):
        super().__init__(message or f"Rate limited: retry after {retry_after} s")
        self.retry_after = float(retry_after)


class RetriableError(Exception):
    """A failure that may pass: try again after a backoff."""


class PermanentError(Exception):
    """A failure that will not pass by retrying; `user_message` is safe to show a member."""

    def __init__(self, message: str, user_message: str = ""):
        super().__init__(message)
        self.user_message = user_message


@dataclass(frozen=True)
class Classification:
    error_class: str
    retry_after: float | None = None


def classify(exc: BaseException) -> Classification:
    """Most specific first: BadRequest and TimedOut are subclasses of NetworkError."""
    if isinstance(exc, RateLimited):
        return Classification(RATE_LIMITED, exc.retry_after)
    if isinstance(exc, telegram.error.RetryAfter):
        retry_after = exc.retry_after
        if isinstance(retry_after, timedelta):
            retry_after = retry_after.total_seconds()
        return Classification(RATE_LIMITED, float(retry_after))
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
