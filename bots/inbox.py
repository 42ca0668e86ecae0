"""The inbox: updates are taken in with one INSERT, then handed to the telegram queue.

The webhook is the hottest path of the product, so it only stores the update (status
`received`). The telegram cluster's dispatcher claims received rows in batches and enqueues
their handling: one job per chat per batch, since a job drains its chat in update_id order.
Nothing is lost when the broker is down (the job record waits for housekeeping to dispatch
it) and a redelivered update_id is ignored by the unique constraint."""

from django.db import connection, transaction

from bots.models import Update
from bots.updates import chat_id_of, loads, storable, update_id_of
from queueing.locks import try_lock

DISPATCH_BATCH = 500
# How often the telegram cluster looks for received updates: the most a reply waits for it.
DISPATCH_INTERVAL = 0.05


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
    from bots.tasks import handle_update

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
            for pk, label in _one_per_chat(received):
                handle_update.enqueue_with(args=[pk], label=label)
        return len(received)


def _received():
    return Update.objects.filter(status=Update.Status.RECEIVED).order_by("id")


def _one_per_chat(received: list[tuple[int, int, int, int | None]]) -> list[tuple[int, str]]:
    """(update pk to start from, job label) per chat; updates without a chat each get a job."""
    chats: dict[tuple[int, int], list[tuple[int, int]]] = {}
    jobs = []
    for pk, bot_id, update_id, chat_id in received:
        if chat_id is None:
            jobs.append((pk, f"update {update_id}"))
        else:
            chats.setdefault((bot_id, chat_id), []).append((update_id, pk))
    for (_, chat_id), updates in chats.items():
        first_update_id, first_pk = min(updates)
        more = f" and {len(updates) - 1} more" if len(updates) > 1 else ""
        jobs.append((first_pk, f"update {first_update_id}{more} chat {chat_id}"))
    return jobs
