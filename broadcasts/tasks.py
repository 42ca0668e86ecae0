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
    FIRST_BATCH,
    SMALL_BROADCAST,
    BroadcastSender,
    attachment,
    fan_out,
    fan_out_more,
    finish_if_complete,
)
from broadcasts.summary import marked_as_test
from queueing import history
from queueing.errors import Deferred
from queueing.jobs import job
from queueing.locks import try_lock
from queueing.queues import get_queue
from queueing.runner import time_left


@job(queue="telegram")
def start_broadcast(broadcast_id: int) -> dict:
    """draft/scheduled -> sending: the first batch of the fan-out in one transaction with the
    status, so a crash leaves either nothing or a sending broadcast to carry on; then its
    sender is enqueued at once, and the rest of the fan-out made here, a batch per transaction,
    while it sends. At half the queue's timeout the job asks to run again at once. Run again on
    a broadcast already sending (a resume, a retried job, an A/B winner), it carries on the
    fan-out and enqueues the sender unless one is waiting or running."""
    with transaction.atomic():
        broadcast = Broadcast.objects.select_for_update().get(pk=broadcast_id)
        batches = 0
        if broadcast.status in (Broadcast.Status.DRAFT, Broadcast.Status.SCHEDULED):
            if broadcast.awaits_approval:  # edited after approval, after Send was pressed
                return {"skipped": "awaiting approval"}
            broadcast.fan_out_after = 0
            fan_out(broadcast, FIRST_BATCH)  # arms and languages included
            batches = 1
            broadcast.status, broadcast.started_at = Broadcast.Status.SENDING, timezone.now()
            broadcast.save(update_fields=["status", "started_at"])
        elif broadcast.status != Broadcast.Status.SENDING:
            return {"skipped": f"broadcast is {broadcast.status}"}
    if broadcast.fan_out_after is None and finish_if_complete(broadcast):  # nobody to send to
        return {"batches": batches}
    if not history.pending(send_deliveries, broadcast.pk):
        small = (
            broadcast.fan_out_after is None and broadcast.deliveries.all()[:SMALL_BROADCAST].count() < SMALL_BROADCAST
        )
        send_deliveries.enqueue_with(
            args=[broadcast.pk],
            queue="telegram" if small else "broadcasts",
            label=f"broadcast {broadcast.pk}: send",
        )
    carry_on_until = time.monotonic() + get_queue("telegram").timeout / 2
    more = broadcast.fan_out_after is not None
    while more:
        more = fan_out_more(broadcast.pk)
        batches += 1
        if more and time.monotonic() >= carry_on_until:
            raise Deferred(0, f"fanned out {batches} batches: carrying on in a new run")
    return {"batches": batches}


@job(queue="broadcasts")
def send_deliveries(broadcast_id: int) -> dict:
    """One process sends for a bot at a time: it alone spaces its sends as they leave, so
    a worker that wakes late cannot crowd another's sends into Telegram's one-second
    window. Another broadcast of the bot waits its turn without using up an attempt.

    It sends for half the queue's timeout, then asks to run again at once (another
    broadcast of the bot may take its turn in between)."""
    broadcast = Broadcast.objects.select_related("bot", "template").get(pk=broadcast_id)
    with try_lock(f"broadcast-sender:{broadcast.bot_id}") as held:
        if not held:
            raise Deferred(1.0, f"another broadcast is sending for {broadcast.bot}")
        sender = BroadcastSender(broadcast, until=time.monotonic() + time_left() / 2)
        result = sender.run()
    if sender.deferral:
        broadcast.stall(sender.deferral.reason, sender.deferral.seconds)
        raise Deferred(sender.deferral.seconds, sender.deferral.reason)
    if sender.carry_on:
        raise Deferred(0, f"sent {result.sent}: carrying on in a new run")
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
