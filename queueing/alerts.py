"""Alerts to people: the dashboard's red banners, told to the operators' Telegram chats.

The default cluster evaluates the thresholds every ALERT_EVALUATE_SECONDS (one process at
a time, under a lock) and moves each alert along, keeping its state in the database
(`Alert`, an episode per row) so that however many processes evaluate, and however often,
each message is sent once:

    crossed ──(ALERT_RAISE_AFTER s)──> told ──(every ALERT_REPEAT_MINUTES)──> reminded
       │                                │
    clear: deleted untold          clear for ALERT_RESOLVE_AFTER s: "resolved" (kept 90 days)

Every step is a conditional UPDATE on the alert's row: only the process whose update
changed it enqueues the messages, in the same transaction. A problem that flaps faster
than the raise and resolve delays makes one alert, not a stream of them.

Messages are `send_alert` jobs, one per chat, on the telegram queue, sent by the
registered sender (the bots app's: the platform's bot). When the telegram queue has no
live cluster (the alert may be about that very cluster) they are sent straight from the
evaluating process instead. An alert's `notifications` counts the messages Telegram
accepted, so "operators told" is said only once one went out (`last_notified_at` is when
they were due, sent or not)."""

import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.urls import reverse
from django.utils import timezone

from queueing import health, redaction
from queueing.errors import DEFERRED, RATE_LIMITED, PermanentError, classify
from queueing.heartbeat import alive_clusters
from queueing.jobs import job
from queueing.locks import try_lock
from queueing.models import Alert
from queueing.registry import Registry
from queueing.wording import duration

logger = logging.getLogger(__name__)

LOCK = "queueing:alerts"
SEND_QUEUE = "telegram"
DETAIL_LENGTH = 300
# Resolved alerts are history for the operators; older ones are deleted.
HISTORY_KEPT = timedelta(days=90)


def evaluate_duty(cluster: str) -> int:
    """The default cluster's duty (queueing.apps): evaluate unless another process is."""
    with try_lock(LOCK) as held:
        return evaluate() if held else 0


def current_problems() -> dict[str, health.Check]:
    """The crossed thresholds: what the dashboard shows as red banners."""
    return {check.name: check for check in health.detailed().problems}


def evaluate(problems: dict[str, health.Check] | None = None, now: datetime | None = None) -> int:
    """Open, remind, resolve: returns how many messages were sent or enqueued."""
    now = now or timezone.now()
    problems = current_problems() if problems is None else problems
    active = {alert.key: alert for alert in Alert.objects.active()}
    told = 0
    for key, check in problems.items():
        alert = active.get(key) or _open(check, now)
        if alert is not None:
            told += _crossed(alert, check, now)
    for key, alert in active.items():
        if key not in problems:
            told += _clear(alert, now)
    Alert.objects.filter(resolved_at__lt=now - HISTORY_KEPT).delete()
    return told


def _open(check: health.Check, now: datetime) -> Alert | None:
    try:
        with transaction.atomic():
            return Alert.objects.create(key=check.name, level=check.status, detail=_detail(check), raised_at=now)
    except IntegrityError:  # another process opened it a moment ago
        return None


def _crossed(alert: Alert, check: health.Check, now: datetime) -> int:
    """Still crossed: tell once it has lasted ALERT_RAISE_AFTER, remind every
    ALERT_REPEAT_MINUTES, and forget that it was seen clear."""
    fields: dict = {}
    if alert.clear_since is not None:
        fields["clear_since"] = None
    detail = _detail(check)
    if (alert.level, alert.detail) != (check.status, detail):
        fields.update(level=check.status, detail=detail)
        alert.level, alert.detail = check.status, detail
    repeat = timedelta(minutes=settings.ALERT_REPEAT_MINUTES)
    if alert.last_notified_at is None:
        message = raised_message(alert) if now - alert.raised_at >= _seconds(settings.ALERT_RAISE_AFTER) else None
    elif repeat and now - alert.last_notified_at >= repeat:
        message = reminder_message(alert, now)
    else:
        message = None
    if message:
        fields["last_notified_at"] = now
    if not fields:
        return 0
    with transaction.atomic():
        changed = Alert.objects.filter(
            pk=alert.pk, resolved_at__isnull=True, last_notified_at=alert.last_notified_at
        ).update(**fields)
        if changed and message:
            logger.warning("Alert: %s", message.splitlines()[0])
            return tell(message, alert.pk)
    return 0


def _clear(alert: Alert, now: datetime) -> int:
    """No longer crossed: an alert nobody was told of goes quietly; one they were told of
    is resolved once it has stayed clear for ALERT_RESOLVE_AFTER."""
    unresolved = Alert.objects.filter(pk=alert.pk, resolved_at__isnull=True)
    if alert.last_notified_at is None:  # no history worth keeping: a flapping check makes many
        unresolved.filter(last_notified_at__isnull=True).delete()
        return 0
    if alert.clear_since is None:
        unresolved.filter(clear_since__isnull=True).update(clear_since=now)
        alert.clear_since = now
    if now - alert.clear_since < _seconds(settings.ALERT_RESOLVE_AFTER):
        return 0
    with transaction.atomic():
        if unresolved.filter(clear_since__isnull=False).update(resolved_at=now):
            alert.resolved_at = now
            message = resolved_message(alert)
            logger.warning("Alert: %s", message.splitlines()[0])
            return tell(message, alert.pk)
    return 0


def _detail(check: health.Check) -> str:
    # A check's detail may quote an exception, and with it a URL holding a password.
    return redaction.redact(check.detail)[:DETAIL_LENGTH]


def _seconds(value: float) -> timedelta:
    return timedelta(seconds=value)


def raised_message(alert: Alert) -> str:
    return _with_link(f"🔴 {alert.level.upper()}: {alert.key}\n{alert.detail}".strip())


def reminder_message(alert: Alert, now: datetime) -> str:
    since = timezone.localtime(alert.raised_at)
    text = f"🔴 Still {alert.level}: {alert.key}, for {duration(now - alert.raised_at)} (since {since:%H:%M %Z})"
    return _with_link(f"{text}\n{alert.detail}".strip())


def resolved_message(alert: Alert) -> str:
    return _with_link(f"✅ Resolved: {alert.key}, after {duration(alert.resolved_at - alert.raised_at)}")


def _with_link(text: str) -> str:
    if not settings.PUBLIC_URL:
        return text
    return f"{text}\n{settings.PUBLIC_URL.rstrip('/')}{reverse('queueing:dashboard')}"


def tell(text: str, alert_id: int | None = None) -> int:
    """Send `text` to every ALERT_CHAT_IDS chat: a job each on the telegram queue, enqueued
    in the caller's transaction; sent from here after the commit when that queue has no
    live cluster. Returns how many chats it goes to; each message that goes out counts on
    the alert."""
    chats = list(settings.ALERT_CHAT_IDS)
    if not chats:
        return 0
    text = redaction.redact(text)
    if alive_clusters(SEND_QUEUE).exists():
        for chat_id in chats:
            send_alert.enqueue_with(args=[chat_id, text, alert_id], label=f"alert to {chat_id}")
    else:
        transaction.on_commit(lambda: _send_now(chats, text, alert_id))
    return len(chats)


def _send_now(chats: list, text: str, alert_id: int | None, tries: int = 3) -> None:
    """Without the queue's retries: a paced or throttled send waits and tries again, a
    little; anything else is logged (the reminder tries again after ALERT_REPEAT_MINUTES)."""
    for chat_id in chats:
        for attempt in range(1, tries + 1):
            try:
                send_alert(chat_id, text, alert_id)
                break
            except Exception as exc:
                classification = classify(exc)
                if classification.error_class in (RATE_LIMITED, DEFERRED) and attempt < tries:
                    time.sleep(min(classification.retry_after or 1.0, 5.0))
                    continue
                logger.exception("Alert to chat %s not sent (no %s cluster to retry it)", chat_id, SEND_QUEUE)
                break


AlertSender = Callable[[int, str], dict]
# How a message reaches an operators' chat (chat id, text) -> what was sent: the bots app
# registers its bot's sender from BotsConfig.ready().
senders: Registry[AlertSender] = Registry("alert sender")


@job(queue=SEND_QUEUE)
def send_alert(chat_id: int, text: str, alert_id: int | None = None) -> dict:
    """One alert message to one operators' chat, by the first registered sender; the alert
    counts it once Telegram accepted it."""
    if not senders:
        raise PermanentError("No alert sender registered (the bots app registers one)")
    sent = senders.values()[0](chat_id, text)
    Alert.objects.filter(pk=alert_id).update(notifications=F("notifications") + 1)
    return sent
