"""The inbox: updates are taken in with one INSERT, then handed to the telegram queue.

The webhook is the hottest path of the product, so it only stores the update (status
`received`). The telegram cluster's dispatcher claims received rows in batches and enqueues
their handling: one job per chat per batch, since a job drains its chat in update_id order.
Nothing is lost when the broker is down (the job record waits for housekeeping to dispatch
it) and a redelivered update_id is ignored by the unique constraint."""

from datetime import timedelta

from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from bots.models import Update
from bots.tasks import handle_update
from bots.updates import chat_id_of, loads, storable, update_id_of
from queueing import history
from queueing.locks import try_lock

DISPATCH_BATCH = 500
# How often the telegram cluster looks for received updates: the most a reply waits for it.
DISPATCH_INTERVAL = 0.05
# A job that has just finished may have left a chat to another that is handling it right now.
ORPHAN_GRACE = timedelta(seconds=5)
ORPHAN_INTERVAL = 2.0


def accept_update(bot_pk: int, body: bytes | str) -> None:
    """Store a JSON update as received, as one INSERT in autocommit (no model instance, no
    transaction block: this is the webhook's whole cost; the database fills in status and
    received_at). A redelivered update_id changes nothing. Raises MalformedUpdate for what
    no database would store or Telegram never sends, or ValueError for a body that is not
    UTF-8 JSON."""
    text = body.decode() if isinstance(body, bytes) else body
    text, payload = storable(text, loads(text))
    with connection.cursor() as cursor:
        cursor.execute(_INSERT, [bot_pk, update_id_of(payload), text, chat_id_of(payload)])


_INSERT = (
    f"INSERT INTO {Update._meta.db_table} (bot_id, update_id, payload, chat_id)"
    " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING"
)


def dispatch_received(_cluster: str = "telegram") -> int:
    """Enqueue the handling of received updates; returns how many were claimed. One process
    at a time dispatches, so every update is claimed exactly once. Polled every 50 ms by
    every telegram cluster, so an idle inbox costs one indexed query and no lock."""
    if not _received().exists():
        return 0
    with try_lock("bots:inbox-dispatch") as held:
        if not held:
            return 0
        received = list(_received().values_list("pk", "bot_id", "update_id", "chat_id")[:DISPATCH_BATCH])
        with transaction.atomic():
            # Conditional: a worker draining a chat may have handled some of them meanwhile.
            Update.objects.filter(pk__in=[pk for pk, *_ in received], status=Update.Status.RECEIVED).update(
                status=Update.Status.ENQUEUED
            )
            for pks, label in _one_per_chat(received):
                record = handle_update.enqueue_with(args=[pks[0]], label=label)
                Update.objects.filter(pk__in=pks).update(job=record)
        return len(received)


def hand_on_orphans(_cluster: str = "telegram") -> int:
    """Enqueued updates whose job has ended without handling them go back to `received`, and
    the dispatcher enqueues them again: the job's attempts ran out on an earlier update of
    the chat, or it left the chat to another job that then failed, or its record was pruned.
    Each update keeps its own attempts, so this never retries one past its budget."""
    orphans = Update.objects.filter(status=Update.Status.ENQUEUED).filter(
        Q(job__isnull=True) | Q(job__in=history.ended_before(timezone.now() - ORPHAN_GRACE))
    )
    return orphans.update(status=Update.Status.RECEIVED)


def _received():
    return Update.objects.filter(status=Update.Status.RECEIVED).order_by("id")


def _one_per_chat(received: list[tuple[int, int, int, int | None]]) -> list[tuple[list[int], str]]:
    """(update pks, the one to start from first; job label) per chat; updates without a chat
    each get a job."""
    chats: dict[tuple[int, int], list[tuple[int, int]]] = {}
    jobs = []
    for pk, bot_id, update_id, chat_id in received:
        if chat_id is None:
            jobs.append(([pk], f"update {update_id}"))
        else:
            chats.setdefault((bot_id, chat_id), []).append((update_id, pk))
    for (_, chat_id), updates in chats.items():
        updates.sort()
        more = f" and {len(updates) - 1} more" if len(updates) > 1 else ""
        jobs.append(([pk for _, pk in updates], f"update {updates[0][0]}{more} chat {chat_id}"))
    return jobs
