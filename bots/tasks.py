from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from bots import handlers, telegram_api
from bots.downloads import job as download_job
from bots.models import Update
from bots.telegram_api import circuit_key
from queueing import circuit, redaction
from queueing.errors import DEFERRED, MAYBE_DONE, PERMANENT, RATE_LIMITED, ServiceUnavailable, classify
from queueing.jobs import job
from queueing.locks import try_lock

ANSWERED_THEN_FAILED = "Answered, then failed (not handled again, so the member is not answered twice):"
WORKER_DIED = "The worker handling this stopped midway: its answer may have arrived, so it is not sent again."


@job(queue="telegram")
def handle_update(update_pk: int) -> int:
    """Handle this update and any earlier ones of its chat, in update_id order."""
    update = Update.objects.select_related("bot").get(pk=update_pk)
    if update.chat_id is None:
        if update.status in (Update.Status.RECEIVED, Update.Status.ENQUEUED):
            handle_one(update)
            return 1
        return 0
    return drain_chat(update.bot, update.chat_id)


def drain_chat(bot, chat_id: int) -> int:
    """Handle a chat's waiting updates one at a time, oldest first.

    1. Take the chat's lock; if another worker holds it, stop: that worker will reach
       every update stored before it lets go.
    2. Handle the oldest waiting update until none is left.
    3. Let go, then look once more: an update stored between the last look and letting
       go found the lock taken and relies on this worker to handle it."""
    handled = 0
    while True:
        with try_lock(f"chat:{bot.pk}:{chat_id}") as held:
            if not held:
                return handled
            while update := Update.objects.next_in_chat(bot.pk, chat_id):
                update.bot = bot
                handle_one(update)
                handled += 1
        if not Update.objects.unhandled_in_chat(bot.pk, chat_id).exists():
            return handled


def handle_one(update: Update) -> None:
    """Handle one update and record how it ended.

    - A wait (a rate limit; Telegram unreachable, checked before the handler changes
      anything) costs no attempt: it is raised for the job to wait out. An outage longer
      than TELEGRAM_OUTAGE_HORIZON gives the update up.
    - An answer that may have reached the member is not sent again: the update fails.
    - Other failures count against the same budget as handle_update's own attempts, so an
      update that keeps failing cannot hold its chat back for ever.
    - An update whose worker died while handling it (killed, or over its timeout) may have
      been answered, and one that failed after an answer went out has been: either fails
      rather than risk a second answer."""
    if update.handling_since is not None:
        update.mark(Update.Status.FAILED, WORKER_DIED)
        return
    handling = Update.objects.filter(pk=update.pk)
    answered_before = telegram_api.calls_done()
    try:
        if outage := circuit.wait_for(circuit_key(update.bot_id)):
            raise ServiceUnavailable(outage.wait, f"Telegram {outage.describe()}")
        handling.update(handling_since=timezone.now())
        status = handlers.handle(update.bot, update)
    except Exception as exc:
        handling.update(handling_since=None)
        error_class = classify(exc).error_class
        reason = redaction.describe(exc)
        if telegram_api.calls_done() > answered_before:
            update.mark(Update.Status.FAILED, f"{ANSWERED_THEN_FAILED} {reason}")
            return
        if error_class == DEFERRED and _outage_outlived(update):
            update.mark(Update.Status.FAILED, f"Given up after {settings.TELEGRAM_OUTAGE_HORIZON} s: {reason}")
            return
        if error_class in (RATE_LIMITED, DEFERRED):
            raise
        if error_class == MAYBE_DONE:
            update.mark(Update.Status.FAILED, f"{reason}. The answer may have arrived, so it is not sent again.")
            return
        attempts = update.attempts + 1
        Update.objects.filter(pk=update.pk).update(attempts=attempts)
        if error_class == PERMANENT or attempts >= handle_update.attempt_budget:
            update.mark(Update.Status.FAILED, reason)
            return
        raise
    update.mark(status)


def _outage_outlived(update: Update) -> bool:
    return update.received_at < timezone.now() - timedelta(seconds=settings.TELEGRAM_OUTAGE_HORIZON)


@job(queue="downloads")
def download_media(download_pk: int) -> dict:
    """Download a link a member sent and send them the file (see bots.downloads.job)."""
    return download_job.run(download_pk)
