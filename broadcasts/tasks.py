import time

from django.db import transaction
from django.utils import timezone

from broadcasts.models import Broadcast
from broadcasts.sending import SMALL_BROADCAST, ChunkSender, chunk_bounds, fan_out, finish_if_complete
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
            created = fan_out(broadcast)
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


@job(queue="telegram")
def start_due_broadcasts() -> int:
    """Run by a django-q2 Schedule every minute: scheduled broadcasts whose time has come."""
    due = list(
        Broadcast.objects.filter(status=Broadcast.Status.SCHEDULED, scheduled_at__lte=timezone.now()).values_list(
            "pk", flat=True
        )
    )
    for pk in due:
        start_broadcast.enqueue(pk)
    return len(due)


def enqueue_due_broadcasts() -> int:
    """The django-q2 Schedule's function: the Schedule runs plain functions, and this hands the
    work to the job contract so it gets a JobRecord, retries and the telegram queue."""
    return start_due_broadcasts.enqueue().pk
