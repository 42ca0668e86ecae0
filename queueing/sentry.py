"""Error reporting to Sentry, for the web processes and the queue workers alike.

`init_sentry()` runs at the end of the settings when SENTRY_DSN is set. Jobs carry their
queue, kind, attempt and id as tags and a "job" context (queueing.runner). Failures that
retrying or reporting cannot help are dropped: permanent per-member errors (blocked by the
member, chat not found) and Telegram's flood control (RetryAfter)."""

import os
from collections.abc import Iterator
from contextlib import contextmanager

import sentry_sdk
import telegram.error
from sentry_sdk.integrations.django import DjangoIntegration

from queueing import redaction
from queueing.errors import DEFERRED, MAYBE_DONE, PERMANENT, RATE_LIMITED, classify

# Expected in normal operation, and already in the job history: a member who blocked the bot
# or whose chat is gone, and flood control (the job waits it out and runs again).
DROPPED = {PERMANENT, RATE_LIMITED, DEFERRED, MAYBE_DONE}


def before_send(event: dict, hint: dict) -> dict | None:
    """Drop what is expected; redact every string of the rest (messages, exception values,
    local variables, breadcrumbs)."""
    exc_info = hint.get("exc_info")
    if exc_info and exc_info[1] is not None:
        exc = exc_info[1]
        if isinstance(exc, telegram.error.RetryAfter) or classify(exc).error_class in DROPPED:
            return None
    return redaction.redact_all(event)


def init_sentry(dsn: str | None = None, **options) -> bool:
    """Start the Sentry SDK when a DSN is given (or SENTRY_DSN is set); returns whether it did.
    `options` go to sentry_sdk.init as they are (tests pass a transport)."""
    dsn = dsn if dsn is not None else os.environ.get("SENTRY_DSN", "")
    if not dsn:
        return False
    sentry_sdk.init(
        dsn=dsn,
        integrations=[DjangoIntegration()],
        environment=os.environ.get("SENTRY_ENVIRONMENT") or None,
        release=os.environ.get("SENTRY_RELEASE") or None,
        traces_sample_rate=float(os.environ.get("SENTRY_TRACES_SAMPLE_RATE") or 0.0),
        # No personal data (user ids, IPs, cookies, request bodies): sentry-sdk's default when
        # neither send_default_pii (deprecated since 2.7x) nor data_collection is given.
        before_send=before_send,
        **options,
    )
    return True


@contextmanager
def job_scope(record) -> Iterator[None]:
    """While a job runs: its queue, kind, attempt and id on everything reported to Sentry."""
    with sentry_sdk.isolation_scope() as scope:
        tags = {"queue": record.queue, "job.kind": record.kind, "job.attempt": record.attempts, "job.id": record.pk}
        for name, value in tags.items():
            scope.set_tag(name, value)
        scope.set_context(
            "job",
            {
                "id": record.pk,
                "queue": record.queue,
                "kind": record.kind,
                "label": record.label,
                "attempt": record.attempts,
                "max_attempts": record.max_attempts,
                "worker": record.worker,
                "task_id": record.task_id,
            },
        )
        yield
