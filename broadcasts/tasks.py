import time

from django.db import transaction
from django.utils import timezone

from bots.models import TelegramUser
from bots.pacing import wait_for_reply_slot
from bots.telegram_api import call
from broadcasts import variants
from broadcasts.markup import keyboard_for_test
from broadcasts.models import Broadcast
from broadcasts.sending import (
    SMALL_BROADCAST,
    ChunkSender,
    attachment,
    chunk_bounds,
    fan_out,
    finish_if_complete,
)
from broadcasts.summary import marked_as_test
from queueing import history
from queueing.errors import Deferred
from queueing.jobs import job
from queueing.locks import try_lock
from queueing.queues import get_queue


@job(queue="telegram")
def start_broadcast(broadcast_id: int) -> dict:
    """draft/scheduled -> sending: create the deliveries and enqueue their chunks, in one
    transaction, so a crash leaves either nothing or everything to do. Run again on a
    broadcast already sending (a resume, or a retried job), it enqueues what is left."""
    with transaction.atomic():
        broadcast = Broadcast.objects.select_for_update().get(pk=broadcast_id)
        created = 0
        if broadcast.status in (Broadcast.Status.DRAFT, Broadcast.Status.SCHEDULED):
            if broadcast.awaits_approval:  # edited after approval, after Send was pressed
                return {"skipped": "awaiting approval"}
            created = fan_out(broadcast)  # arms and languages included
            broadcast.status, broadcast.started_at = Broadcast.Status.SENDING, timezone.now()
            broadcast.save(update_fields=["status", "started_at"])
        elif broadcast.status != Broadcast.Status.SENDING:
            return {"skipped": f"broadcast is {broadcast.status}"}
        chunks = chunk_bounds(broadcast)
        small = broadcast.deliveries.count() < SMALL_BROADCAST
        for first_id, last_id in chunks:
            send_chunk.enqueue_with(
                args=[broadcast.pk, first_id, last_id],
                queue="telegram" if small else "broadcasts",
                label=f"broadcast {broadcast.pk} deliveries {first_id}-{last_id}",
            )
    if not chunks:
        finish_if_complete(broadcast)
    return {"deliveries": created, "chunks": len(chunks)}


@job(queue="broadcasts")
def send_chunk(broadcast_id: int, first_id: int, last_id: int) -> dict:
    """One process sends for a bot at a time: it alone spaces its sends as they leave, so
    a worker that wakes late cannot crowd another's sends into Telegram's one-second
    window. A second chunk waits its turn without using up an attempt.

    Once its own range is done the sender carries on with the other chunks still waiting
    for the lock, for half the queue's timeout: handing over would leave the bot's slots
    unused for a second each time. Their own jobs then find nothing left."""
    broadcast = Broadcast.objects.select_related("bot", "template").get(pk=broadcast_id)
    with try_lock(f"broadcast-sender:{broadcast.bot_id}") as held:
        if not held:
            raise Deferred(1.0, f"another chunk is sending for {broadcast.bot}")
        continue_until = time.monotonic() + get_queue("broadcasts").timeout / 2
        sender = ChunkSender(broadcast, first_id, last_id, chunk_bounds(broadcast), continue_until)
        result = sender.run()
    if sender.deferral:
        broadcast.stall(sender.deferral.reason, sender.deferral.seconds)
        raise Deferred(sender.deferral.seconds, sender.deferral.reason)
    finish_if_complete(broadcast)
    return result.as_dict()


# Scheduled broadcasts start within this many seconds of their time.
DUE_INTERVAL = 10.0


def start_due_broadcasts(cluster: str) -> int:
    """A housekeeping duty of the default cluster (BroadcastsConfig.ready): enqueue the start
    of each scheduled broadcast whose time has come, unless its start is already waiting or
    running. One process at a time. Returns how many it started."""
    with try_lock("broadcasts:start-due") as held:
        if not held:
            return 0
        due = Broadcast.objects.filter(status=Broadcast.Status.SCHEDULED, scheduled_at__lte=timezone.now())
        started = [pk for pk in due.values_list("pk", flat=True) if not history.pending(start_broadcast, pk)]
        for pk in started:
            start_broadcast.enqueue_with(args=[pk], label=f"broadcast {pk}: start")
    return len(started)


def send_winner(broadcast: Broadcast, arm: str | None = None) -> int | None:
    """An A/B test's winner (`arm`, or the best so far) to the rest of the audience: None when
    a winner was chosen before or the broadcast is over, else how many it goes to."""
    released = variants.decide(broadcast, arm)
    if released and broadcast.status == Broadcast.Status.SENDING:
        start_broadcast.enqueue_with(args=[broadcast.pk], label=f"broadcast {broadcast.pk}: the A/B winner")
    return released


def send_due_winners(_cluster: str = "telegram") -> int:
    """Housekeeping: A/B tests whose wait is over send their winner to the rest."""
    with try_lock("broadcasts:ab-winners") as held:
        if not held:
            return 0
        return sum(send_winner(broadcast) is not None for broadcast in variants.due_winners())


@job(queue="telegram")
def send_test(broadcast_id: int, member_id: int, operator_id: int) -> dict:
    """The broadcast exactly as `member_id` would get it (their text, the buttons, the
    attachment), marked as a test, to the chat of the operator's linked account (`operator_id`)."""
    broadcast = Broadcast.objects.select_related("bot", "template").get(pk=broadcast_id)
    member = TelegramUser.objects.get(pk=member_id)
    chat_id = TelegramUser.objects.get(pk=operator_id).chat_id
    version = variants.version_for(broadcast, member)
    text = marked_as_test(broadcast, member, version)
    params = {
        "chat_id": chat_id,
        "parse_mode": broadcast.effective_parse_mode or None,
        "reply_markup": keyboard_for_test(version),
    }
    wait_for_reply_slot(broadcast.bot, chat_id)
    if not version.attachment:
        message = call(broadcast.bot, "send_message", text=text, **params)
    elif version.is_photo:
        message = call(broadcast.bot, "send_photo", photo=attachment(version.attachment), caption=text, **params)
    else:
        message = call(broadcast.bot, "send_document", document=attachment(version.attachment), caption=text, **params)
    return {"message_id": message.message_id, "as": str(member)}
