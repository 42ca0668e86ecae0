"""Queue statistics that stay cheap with millions of finished jobs.

Finished jobs are rolled up by each queue's housekeeper into per-minute rows (JobMinute)
and running totals (JobTotal), a minute at least ROLLUP_LAG old at a time; once the
roll-up has passed an hour, that hour's minute rows are summed into hour rows (JobHour).
Readers sum hour rows for the window's whole hours, minute rows for the minutes around
them, and add the few jobs finished since the queue's cursor from the history itself (an
indexed range on status and finished_at): numbers are exact up to the second, and a
24-hour window reads about 24 + 60 rows per series instead of 1,440.

Minute rows are kept for MINUTE_ROWS_KEPT (the dashboard's longest window, 24 h, and a
day's margin), hour rows for HOUR_ROWS_KEPT (the longest report); the roll-up prunes
older ones as it goes."""

import math
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Count, DateTimeField, F, Func, IntegerField, Min, Q, Sum, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from queueing.models import TIMING_BUCKETS, JobHour, JobMinute, JobRecord, JobTotal, RollupCursor, bucket_fields
from queueing.queues import queue_names

# A job's finishing UPDATE commits a moment after it reads the clock (SQLite may wait for
# its lock up to busy_timeout): a minute is rolled up only once nothing can still land in it.
ROLLUP_LAG = timedelta(seconds=30)
ROLLUP_STEP = timedelta(hours=1)
# How far back a queue's first roll-up reaches.
ROLLUP_START = timedelta(hours=24)
# A queue whose cursor is further behind than this has no housekeeper rolling it up (its
# cluster is stopped): the default cluster's housekeeper does it instead.
ROLLUP_ADOPT_AFTER = timedelta(minutes=2)
# The dashboard's longest window is 24 hours; a day more lets a 24-hour report run any time.
MINUTE_ROWS_KEPT = timedelta(hours=48)
# The longest window of a report (queue_report --hours).
HOUR_ROWS_KEPT = timedelta(days=90)
# Rows deleted per query, and at most per roll-up, when pruning old statistics.
PRUNE_BATCH = 2000
PRUNE_BATCHES = 10
WAIT_FIELDS = bucket_fields("wait")
RUN_FIELDS = bucket_fields("run")


def floor_minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def floor_hour(moment: datetime) -> datetime:
    """Hours are whole hours of UTC (every time here is), so they are the same everywhere."""
    return moment.replace(minute=0, second=0, microsecond=0)


def ceil_hour(moment: datetime) -> datetime:
    start = floor_hour(moment)
    return start if start == moment else start + timedelta(hours=1)


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
       housekeeper of the same queue may have done this step already), then write the rows,
       and sum every hour the cursor has now passed into JobHour.

    Then prune the queue's statistics past their keeping time. Returns how many per-minute
    rows were written."""
    written = 0
    moved = False
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
            _sum_hours(queue, floor_hour(start), floor_hour(end))
        written += len(tallies)
        moved = True
    if moved:
        prune_statistics(queue)
    return written


def roll_up_lagging(cluster: str = "") -> int:
    """Roll up the queues no housekeeper of their own is rolling up (their cluster is
    stopped, or never ran), so readers never have hours of history to read: a duty of the
    default cluster. Harmless next to a queue's own housekeeper: the cursor decides."""
    written = 0
    lagging_before = timezone.now() - ROLLUP_ADOPT_AFTER
    cursors = _cursors()
    for queue in queue_names():
        if queue not in cursors or cursors[queue] < lagging_before:
            written += roll_up(queue)
    return written


_SERIES = ("kind", "status", "error_class")


def _sum_hours(queue: str, first: datetime, end: datetime) -> None:
    """Hour rows for the hours [first, end) of `queue`, whose minutes are all rolled up."""
    hour = first
    while hour < end:
        rows = (
            JobMinute.objects.filter(queue=queue, minute__gte=hour, minute__lt=hour + timedelta(hours=1))
            .values(*_SERIES)
            .order_by()
            .annotate(**_sums(WAIT_FIELDS + RUN_FIELDS))
        )
        JobHour.objects.bulk_create(
            [JobHour(queue=queue, hour=hour, **row) for row in rows if row["count"]], batch_size=500
        )
        hour += timedelta(hours=1)


def prune_statistics(queue: str, now: datetime | None = None) -> int:
    """Delete the queue's minute rows older than MINUTE_ROWS_KEPT and hour rows older than
    HOUR_ROWS_KEPT, a bounded number of batches at a time (a first run on a long history
    finishes over the next roll-ups). Totals are never pruned. Returns rows deleted."""
    now = now or timezone.now()
    deleted = 0
    for model, period, kept in ((JobMinute, "minute", MINUTE_ROWS_KEPT), (JobHour, "hour", HOUR_ROWS_KEPT)):
        old = model.objects.filter(queue=queue, **{f"{period}__lt": now - kept})
        for _ in range(PRUNE_BATCHES):
            batch = list(old.values_list("pk", flat=True)[:PRUNE_BATCH])
            if not batch:
                break
            deleted += model.objects.filter(pk__in=batch).delete()[0]
    return deleted


def counted(finished_before: datetime) -> Q:
    """Finished jobs that finished before `finished_before` and that the roll-up has already
    counted (before their queue's cursor): the ones that may leave the history without the
    statistics missing them. A queue with no cursor yet starts ROLLUP_START back when it first
    rolls up: anything older than that it will never count."""
    cursors = _cursors()
    uncounted_start = timezone.now() - ROLLUP_START
    condition = Q(pk__in=[])
    for queue, rolled_until in cursors.items():
        condition |= Q(queue=queue, finished_at__lt=min(finished_before, rolled_until))
    condition |= ~Q(queue__in=list(cursors)) & Q(finished_at__lt=min(finished_before, uncounted_start))
    return Q(status__in=JobRecord.FINISHED) & condition


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


def _split_window(since: datetime) -> tuple[Q | None, Q]:
    """Which hour rows (None: none) and which minute rows make up the window from `since`
    (a whole minute) on, without counting a job twice: hour rows for each queue's whole
    hours that its cursor has passed, minute rows before the first whole hour and after
    the last."""
    first_hour = ceil_hour(since)
    hours = None
    minutes = Q(minute__gte=since, minute__lt=first_hour)
    for queue, rolled_until in _cursors().items():
        hours_end = floor_hour(rolled_until)
        if hours_end > first_hour:
            queue_hours = Q(queue=queue, hour__gte=first_hour, hour__lt=hours_end)
            hours = queue_hours if hours is None else hours | queue_hours
        minutes |= Q(queue=queue, minute__gte=max(first_hour, hours_end))
    return hours, minutes


def window_by(
    since: datetime, *group_by: str, tail: dict[SeriesKey, Tally] | None = None, timings: bool = False
) -> dict[tuple, Tally]:
    """Finished jobs since `since` (a whole minute), summed per `group_by` (queue, kind,
    status, error_class, or minute, which reads minute rows only); with `timings`, their
    histograms too (32 more sums). `tail` is `unrolled()`, when the caller has it."""
    sums = _sums(WAIT_FIELDS + RUN_FIELDS) if timings else {"count": Sum("count")}
    if "minute" in group_by:
        sources = [JobMinute.objects.filter(minute__gte=since)]
    else:
        hours, minutes = _split_window(since)
        sources = [JobMinute.objects.filter(minutes)]
        if hours is not None:  # a window of an hour or so has none: spare the query
            sources.append(JobHour.objects.filter(hours))
    result: dict[tuple, Tally] = defaultdict(Tally)
    for rows in sources:
        for row in rows.values(*group_by).order_by().annotate(**sums):
            result[tuple(row[name] for name in group_by)].merge(Tally.from_sums(row))
    names = ["minute", "queue", "kind", "status", "error_class"]
    for key, tally in (unrolled() if tail is None else tail).items():
        if key[0] < since:
            continue
        series = dict(zip(names, key, strict=True))
        result[tuple(series[name] for name in group_by)].merge(tally)
    return result


class _MinuteBin(Func):
    """Which bin of `size` minutes after `origin` a minute falls in, computed by the
    database, so a chart of a day reads 60 bins instead of 1,440 minutes of rows."""

    output_field = IntegerField()

    def __init__(self, field: str, origin: datetime, size: int):
        super().__init__(F(field), Value(origin, output_field=DateTimeField()))
        self.size = int(size)

    def _operands(self, compiler, connection) -> tuple[str, str, list]:
        (moment, moment_params), (origin, origin_params) = (
            compiler.compile(expression) for expression in self.get_source_expressions()
        )
        return moment, origin, [*moment_params, *origin_params]

    def as_sqlite(self, compiler, connection, **extra):
        moment, origin, params = self._operands(compiler, connection)
        minutes = f"CAST(ROUND((julianday({moment}) - julianday({origin})) * 1440) AS INTEGER)"
        return f"({minutes} / {self.size})", params

    def as_sql(self, compiler, connection, **extra):
        moment, origin, params = self._operands(compiler, connection)
        return f"CAST(FLOOR(EXTRACT(EPOCH FROM ({moment} - {origin})) / {60 * self.size}) AS INTEGER)", params


def binned_counts(
    since: datetime, bin_minutes: int, tail: dict[SeriesKey, Tally] | None = None
) -> dict[tuple[int, str], int]:
    """(bin, status) -> jobs finished in that bin of `bin_minutes` minutes from `since`."""
    rows = (
        JobMinute.objects.filter(minute__gte=since)
        .annotate(bin=_MinuteBin("minute", since, bin_minutes))
        .values_list("bin", "status")
        .order_by()
        .annotate(jobs=Sum("count"))
    )
    result: dict[tuple[int, str], int] = defaultdict(int)
    for index, status, jobs in rows:
        result[(index, status)] += jobs
    for (minute, _, _, status, _), tally in (unrolled() if tail is None else tail).items():
        if minute >= since:
            result[(int((minute - since).total_seconds() // 60) // bin_minutes, status)] += tally.count
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
