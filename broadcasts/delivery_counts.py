"""Deliveries counted per broadcast, arm, language, status and minute sent, without counting
the deliveries: what the progress page, its JSON, the queue dashboard, the results and
`broadcast_status` read while a million rows change.

1. The database counts: triggers on the deliveries table (migration 0018) add each INSERT's,
   UPDATE's and DELETE's change as rows of DeliveryCount (+n for the rows' new key, -n for
   their old one), in the same transaction as the change. Every writer is counted, whoever
   it is (sender, cancel, recovery, retry, A/B release, prune, a deleted member), and the
   counts are exact whenever the change is committed. On PostgreSQL a statement adds one
   row per key it changed (a million-row fan-out: a handful); writers only insert, so
   concurrent senders never wait on each other's counts.
2. `fold`, a housekeeping duty, replaces a broadcast's rows by their sums (one row per key),
   so that a read adds up a few hundred rows at most. It deletes and re-inserts in one
   transaction: a reader sees the rows before or after, the same sums either way.
3. Reads add up the rows of one broadcast (DeliveryCount.objects: per_status, per_key,
   sent_per_minute).
"""

from collections import Counter
from datetime import UTC, datetime

from django.db import connection, transaction

from broadcasts.models import DeliveryCount
from queueing.locks import try_lock

FOLD_INTERVAL = 5.0
KEY = ("arm", "language", "status")


def fold(_cluster: str = "telegram") -> int:
    """Replace the rows of every broadcast with new changes by their sums, leaving out sums
    of zero (a deleted broadcast's, whose deliveries' deletion took its counts back to
    zero). Returns how many rows it read."""
    with try_lock("broadcasts:fold delivery counts") as held:
        if not held:
            return 0
        table = connection.ops.quote_name(DeliveryCount._meta.db_table)
        columns = ", ".join(("broadcast_id", *KEY, "sent_minute", "n"))
        with transaction.atomic(), connection.cursor() as cursor:
            # One statement: it deletes exactly the rows it returns, however many senders
            # insert meanwhile (theirs are folded next time).
            cursor.execute(
                f"DELETE FROM {table} WHERE broadcast_id IN (SELECT broadcast_id FROM {table} WHERE NOT folded)"
                f" RETURNING {columns}"
            )
            rows = cursor.fetchall()
            sums: Counter[tuple] = Counter()
            for *key, n in rows:
                sums[tuple(key)] += n
            DeliveryCount.objects.bulk_create(
                (
                    DeliveryCount(
                        broadcast_id=broadcast,
                        arm=arm,
                        language=language,
                        status=status,
                        sent_minute=_in_utc(minute),
                        n=n,
                        folded=True,
                    )
                    for (broadcast, arm, language, status, minute), n in sums.items()
                    if n
                ),
                batch_size=500,
            )
            return len(rows)


def _in_utc(minute: datetime | None) -> datetime | None:
    """SQLite's cursor gives a UTC time without its zone."""
    return minute.replace(tzinfo=UTC) if minute and minute.tzinfo is None else minute
