"""Queue statistics that stay cheap with millions of finished jobs.

Finished jobs are rolled up by each queue's housekeeper into per-minute rows (JobMinute)
and running totals (JobTotal), a minute at least ROLLUP_LAG old at a time. Readers sum
the per-minute rows in the database and add the few jobs finished since the queue's
cursor from the history itself (an indexed range on status and finished_at), so numbers
are exact up to the second and no query reads more than the window's minutes."""

import math
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Count, F, Min, Q, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from queueing.models import TIMING_BUCKETS, JobMinute, JobRecord, JobTotal, RollupCursor, bucket_fields
from queueing.queues import queue_names

# A job's finishing UPDATE commits a moment after it reads the clock (SQLite may wait for
# its lock up to busy_timeout): a minute is rolled up only once nothing can still land in it.
ROLLUP_LAG = timedelta(seconds=30)
ROLLUP_STEP = timedelta(hours=1)
# How far back a queue's first roll-up reaches.
ROLLUP_START = timedelta(hours=24)
WAIT_FIELDS = bucket_fields("wait")
RUN_FIELDS = bucket_fields("run")


def floor_minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def window_start(now: datetime, period: timedelta) -> datetime:
    """The first of the whole minutes that make up `period`, the current minute the last."""
    return floor_minute(now) - period + timedelta(minutes=1)


@dataclass
class Tally:
    """Finished jobs of one series: how many, and histograms of wait and run times."""

    count: int = 0
    timed: int = 0
    wait_sum: float = 0.0
    run_sum: float = 0.0
    wait: list[int] = field(default_factory=lambda: [0] * len(TIMING_BUCKETS))
    run: list[int] = field(default_factory=lambda: [0] * len(TIMING_BUCKETS))

    def add_job(self, wait: float | None, run: float | None) -> None:
        self.count += 1
        if wait is None or run is None:
            return
        self.timed += 1
        self.wait_sum += wait
        self.run_sum += run
        self.wait[bisect_left(TIMING_BUCKETS, wait)] += 1
        self.run[bisect_left(TIMING_BUCKETS, run)] += 1

    def merge(self, other: "Tally") -> None:
        self.count += other.count
        self.timed += other.timed
        self.wait_sum += other.wait_sum
        self.run_sum += other.run_sum
        self.wait = [a + b for a, b in zip(self.wait, other.wait, strict=True)]
        self.run = [a + b for a, b in zip(self.run, other.run, strict=True)]

    @classmethod
    def from_sums(cls, row: dict) -> "Tally":
        return cls(
            count=row["count"] or 0,
            timed=row.get("timed") or 0,
            wait_sum=row.get("wait_sum") or 0.0,
            run_sum=row.get("run_sum") or 0.0,
            wait=[row.get(name) or 0 for name in WAIT_FIELDS],
            run=[row.get(name) or 0 for name in RUN_FIELDS],
        )

    def percentile(self, which: str, q: float) -> float | None:
        """The q-quantile of wait or run time, interpolated within its bucket."""
        return histogram_quantile(self.wait if which == "wait" else self.run, q)


def histogram_quantile(buckets: list[int], q: float) -> float | None:
    total = sum(buckets)
    if not total:
        return None
    rank = q * total
    seen = 0
    for i, in_bucket in enumerate(buckets):
        if in_bucket and seen + in_bucket >= rank:
            lower = TIMING_BUCKETS[i - 1] if i else 0.0
            upper = TIMING_BUCKETS[i]
            if math.isinf(upper):
                return lower
            return lower + (upper - lower) * (rank - seen) / in_bucket
        seen += in_bucket
    return TIMING_BUCKETS[-2]


SeriesKey = tuple[datetime, str, str, str, str]  # minute, queue, kind, status, error class


def _timings(enqueued, dispatched, started, finished) -> tuple[float | None, float | None]:
    if started is None or finished is None:
        return None, None
    waited_since = dispatched or enqueued
    return max((started - waited_since).total_seconds(), 0.0), max((finished - started).total_seconds(), 0.0)


def tally_finished(queue: str | None, start: datetime, end: datetime | None = None) -> dict[SeriesKey, Tally]:
    """Jobs that finished in [start, end) counted per minute and series, from the history."""
    jobs = JobRecord.objects.filter(status__in=JobRecord.FINISHED, finished_at__gte=start)
    if end is not None:
        jobs = jobs.filter(finished_at__lt=end)
    tallies: dict[SeriesKey, Tally] = defaultdict(Tally)
    rows = jobs.order_by().values_list(
        "queue", "kind", "status", "error_class", "enqueued_at", "dispatched_at", "started_at", "finished_at"
    )
    for queue_name, kind, status, error_class, enqueued, dispatched, started, finished in rows.iterator(2000):
        # Filtered here, not in SQL: a queue condition steers SQLite to the (queue, status) index,
        # which reads every finished job of the queue instead of the window.
        if queue is not None and queue_name != queue:
            continue
        key = (floor_minute(finished), queue_name, kind, status, error_class if status == "failed" else "")
        tallies[key].add_job(*_timings(enqueued, dispatched, started, finished))
    return tallies


def roll_up(queue: str, max_steps: int = 30) -> int:
    """Count the jobs of `queue` that finished since its cursor into JobMinute and JobTotal,
    up to ROLLUP_LAG ago, an hour per step:

    1. read the finished jobs of [cursor, cursor + step) from the history;
    2. in one transaction, move the cursor on only if it is still where it was read (another
       housekeeper of the same queue may have done this step already), then write the rows.

    Returns how many per-minute rows were written."""
    written = 0
    for _ in range(max_steps):
        now = timezone.now()
        limit = floor_minute(now - ROLLUP_LAG)
        cursor, _ = RollupCursor.objects.get_or_create(
            queue=queue, defaults={"rolled_until": floor_minute(now - ROLLUP_START)}
        )
        start = cursor.rolled_until
        if start >= limit:
            break
        end = min(limit, start + ROLLUP_STEP)
        tallies = tally_finished(queue, start, end)
        with transaction.atomic():
            if not RollupCursor.objects.filter(queue=queue, rolled_until=start).update(rolled_until=end):
                break
            JobMinute.objects.bulk_create(_minute_rows(tallies), batch_size=500)
            _add_to_totals(tallies)
        written += len(tallies)
    return written


def _minute_rows(tallies: dict[SeriesKey, Tally]) -> Iterable[JobMinute]:
    for (minute, queue, kind, status, error_class), tally in tallies.items():
        yield JobMinute(
            minute=minute,
            queue=queue,
            kind=kind,
            status=status,
            error_class=error_class,
            count=tally.count,
            timed=tally.timed,
            wait_sum=tally.wait_sum,
            run_sum=tally.run_sum,
            **dict(zip(WAIT_FIELDS, tally.wait, strict=True)),
            **dict(zip(RUN_FIELDS, tally.run, strict=True)),
        )


def _add_to_totals(tallies: dict[SeriesKey, Tally]) -> None:
    by_series: dict[tuple[str, str, str], Tally] = defaultdict(Tally)
    for (_, queue, kind, status, _), tally in tallies.items():
        by_series[(queue, kind, status)].merge(tally)
    for (queue, kind, status), tally in by_series.items():
        total, _ = JobTotal.objects.get_or_create(queue=queue, kind=kind, status=status)
        JobTotal.objects.filter(pk=total.pk).update(
            count=F("count") + tally.count,
            timed=F("timed") + tally.timed,
            run_sum=F("run_sum") + tally.run_sum,
            **{name: F(name) + n for name, n in zip(RUN_FIELDS, tally.run, strict=True)},
        )


def _cursors() -> dict[str, datetime]:
    return dict(RollupCursor.objects.values_list("queue", "rolled_until"))


def unrolled() -> dict[SeriesKey, Tally]:
    """Jobs finished after their queue's cursor, from the history, in one query over the
    status and finished_at index (a queue filter would steer SQLite to the queue index)."""
    now = timezone.now()
    cursors = _cursors()
    starts = {queue: cursors.get(queue, now - ROLLUP_START) for queue in queue_names()}
    tallies = tally_finished(None, min(starts.values(), default=now))
    return {key: tally for key, tally in tallies.items() if key[0] >= floor_minute(starts.get(key[1], now))}


def _sums(prefix_fields: list[str]) -> dict:
    return {name: Sum(name) for name in ["count", "timed", "wait_sum", "run_sum", *prefix_fields]}


def window_by(
    since: datetime, *group_by: str, tail: dict[SeriesKey, Tally] | None = None, timings: bool = False
) -> dict[tuple, Tally]:
    """Finished jobs since `since` (a whole minute), summed per `group_by` (fields of JobMinute:
    minute, queue, kind, status, error_class); with `timings`, their histograms too (32 more
    sums). `tail` is `unrolled()`, when the caller has it."""
    sums = _sums(WAIT_FIELDS + RUN_FIELDS) if timings else {"count": Sum("count")}
    rows = JobMinute.objects.filter(minute__gte=since).values(*group_by).order_by().annotate(**sums)
    result: dict[tuple, Tally] = defaultdict(Tally)
    for row in rows:
        result[tuple(row[name] for name in group_by)].merge(Tally.from_sums(row))
    names = ["minute", "queue", "kind", "status", "error_class"]
    for key, tally in (unrolled() if tail is None else tail).items():
        if key[0] < since:
            continue
        series = dict(zip(names, key, strict=True))
        result[tuple(series[name] for name in group_by)].merge(tally)
    return result


def totals() -> dict[tuple[str, str, str], Tally]:
    """Finished jobs since statistics began, per (queue, kind, status)."""
    result: dict[tuple[str, str, str], Tally] = defaultdict(Tally)
    for row in JobTotal.objects.values("queue", "kind", "status", "count", "timed", "run_sum", *RUN_FIELDS):
        result[(row["queue"], row["kind"], row["status"])].merge(Tally.from_sums(row))
    for (_, queue, kind, status, _), tally in unrolled().items():
        result[(queue, kind, status)].merge(tally)
    return result


@dataclass
class QueueNow:
    """What a queue holds right now."""

    queue: str
    queued: int = 0
    retrying: int = 0
    running: int = 0
    oldest_waiting_since: datetime | None = None

    @property
    def oldest_wait(self) -> float | None:
        if self.oldest_waiting_since is None:
            return None
        return max((timezone.now() - self.oldest_waiting_since).total_seconds(), 0.0)


def queues_now() -> dict[str, QueueNow]:
    """Depth (queued jobs), retrying, running and the oldest queued job's wait, per queue.
    Touches only unfinished jobs, through the status index."""
    result = {name: QueueNow(name) for name in queue_names()}
    unfinished = JobRecord.Status.QUEUED, JobRecord.Status.RETRYING, JobRecord.Status.RUNNING
    rows = (
        JobRecord.objects.filter(status__in=unfinished)
        .values("queue", "status")
        .order_by()
        .annotate(
            jobs=Count("pk"),
            oldest=Min(Coalesce("dispatched_at", "enqueued_at"), filter=Q(status=JobRecord.Status.QUEUED)),
        )
    )
    for row in rows:
        now = result.setdefault(row["queue"], QueueNow(row["queue"]))
        setattr(now, row["status"], row["jobs"])
        if row["oldest"] is not None:
            now.oldest_waiting_since = row["oldest"]
    return result


def unfinished_by_kind() -> dict[tuple[str, str, str], int]:
    """(queue, kind, status) -> jobs queued, retrying or running."""
    unfinished = JobRecord.Status.QUEUED, JobRecord.Status.RETRYING, JobRecord.Status.RUNNING
    rows = (
        JobRecord.objects.filter(status__in=unfinished)
        .values_list("queue", "kind", "status")
        .order_by()
        .annotate(jobs=Count("pk"))
    )
    return {(queue, kind, status): jobs for queue, kind, status, jobs in rows}


def failure_rates(period: timedelta, tail: dict[SeriesKey, Tally] | None = None) -> dict[str, tuple[int, int]]:
    """queue -> (failed, finished) among the jobs that finished in the last `period`
    (counted in whole minutes), cancelled jobs left out."""
    since = window_start(timezone.now(), period)
    result = {queue: (0, 0) for queue in queue_names()}
    for (queue, status), tally in window_by(since, "queue", "status", tail=tail).items():
        if status == JobRecord.Status.CANCELLED:
            continue
        failed, finished = result.get(queue, (0, 0))
        result[queue] = (failed + (tally.count if status == JobRecord.Status.FAILED else 0), finished + tally.count)
    return result


def rate_limited_waits() -> dict[str, int]:
    """queue -> jobs waiting out a rate limit (a 429's retry_after) right now."""
    result = dict.fromkeys(queue_names(), 0)
    rows = (
        JobRecord.objects.filter(status=JobRecord.Status.RETRYING, error_class=JobRecord.ErrorClass.RATE_LIMITED)
        .values_list("queue")
        .order_by()
        .annotate(jobs=Count("pk"))
    )
    result.update(dict(rows))
    return result
