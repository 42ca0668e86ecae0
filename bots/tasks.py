from bots import handlers
from bots.models import Update
from queueing.errors import PERMANENT, RATE_LIMITED, classify
from queueing.jobs import job
from queueing.locks import try_lock

# An update that keeps failing is given up after this many tries, so it cannot hold
# its chat's later updates back for ever.
MAX_UPDATE_ATTEMPTS = 5


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
    """A rate limit is waited out without counting as a try; other failures count."""
    try:
        status = handlers.handle(update.bot, update)
    except Exception as exc:
        error_class = classify(exc).error_class
        if error_class == RATE_LIMITED:
            raise
        attempts = update.attempts + 1
        Update.objects.filter(pk=update.pk).update(attempts=attempts)
        if error_class == PERMANENT or attempts >= MAX_UPDATE_ATTEMPTS:
            update.mark(Update.Status.FAILED, f"{type(exc).__name__}: {exc}")
            return
        raise
    update.mark(status)


@job(queue="downloads")
def download_media(download_pk: int) -> dict:
    """Download a link a member sent and send them the file (see bots.downloads.run)."""
    from bots import downloads

    return downloads.run(download_pk)
