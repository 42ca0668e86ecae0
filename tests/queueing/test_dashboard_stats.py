"""The statistics behind the dashboard, metrics and reports: per-minute and hourly roll-ups
count every finished job once, whichever rows a window reads, and old rows are pruned."""

import importlib
import random
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from django.apps import apps
from django.utils import timezone

from queueing import stats
from queueing.models import JobHour, JobMinute, JobRecord, JobTotal, RollupCursor
from queueing.stats import Tally, binned_counts, roll_up, roll_up_lagging, window_by, window_start

pytestmark = pytest.mark.django_db

KINDS = ["tests.jobs.echo", "tests.jobs.crash"]


def finished_job(finished: datetime, status: str = "succeeded", queue: str = "telegram", **fields) -> JobRecord:
    run = fields.pop("run", 0.3)
    wait = fields.pop("wait", 0.7)
    started = finished - timedelta(seconds=run)
    return JobRecord.objects.create(
        queue=queue,
        kind=fields.pop("kind", KINDS[0]),
        status=status,
        enqueued_at=started - timedelta(seconds=wait),
        dispatched_at=started - timedelta(seconds=wait),
        started_at=started,
        finished_at=finished,
        error_class="permanent" if status == "failed" else "",
        **fields,
    )


@pytest.fixture
def clock(monkeypatch):
    """timezone.now() as queueing.stats sees it, moved by the test."""

    class Clock:
        now = timezone.now()

        def set(self, moment: datetime) -> None:
            self.now = moment

    clock = Clock()
    monkeypatch.setattr(stats.timezone, "now", lambda: clock.now)
    return clock


def history_tallies(since: datetime, until: datetime) -> dict[tuple, Tally]:
    """(queue, kind) -> tally, straight from the history: what the roll-ups must agree with."""
    result: dict[tuple, Tally] = {}
    for (_, queue, kind, _, _), tally in stats.tally_finished(None, since, until).items():
        result.setdefault((queue, kind), Tally()).merge(tally)
    return result


def spread_jobs(now: datetime, count: int = 400, hours: float = 23.5) -> None:
    rng = random.Random(5)
    for _ in range(count):
        finished_job(
            now - timedelta(seconds=rng.random() * hours * 3600),
            status=rng.choice(["succeeded", "succeeded", "failed", "cancelled"]),
            queue=rng.choice(["telegram", "broadcasts"]),
            kind=rng.choice(KINDS),
            run=rng.lognormvariate(-1, 1.5),
            wait=rng.expovariate(1),
        )


def test_every_window_counts_each_job_once_from_hour_minute_and_unrolled_rows(clock):
    start = datetime(2026, 3, 2, 12, 37, 20, tzinfo=UTC)
    clock.set(start)
    spread_jobs(start)
    # Roll up in several goes, as the housekeepers do, the cursor crossing hours mid-step.
    for minutes in (0, 25, 50, 95):
        clock.set(start + timedelta(minutes=minutes))
        roll_up("telegram")
        roll_up("broadcasts")
    assert JobHour.objects.exists()
    now = clock.now
    finished_job(now - timedelta(seconds=5))  # not rolled up yet: read from the history

    for hours in (1, 6, 24):
        since = window_start(now, timedelta(hours=hours))
        expected = history_tallies(since, now + timedelta(minutes=1))
        got = window_by(since, "queue", "kind", timings=True)
        assert {key: tally.count for key, tally in got.items() if tally.count} == {
            key: tally.count for key, tally in expected.items()
        }, hours
        for key, tally in expected.items():
            assert (got[key].wait, got[key].run, got[key].timed) == (tally.wait, tally.run, tally.timed)
            assert got[key].run_sum == pytest.approx(tally.run_sum)
        by_status = window_by(since, "status")
        assert sum(t.count for t in by_status.values()) == sum(t.count for t in expected.values())


def test_an_hour_row_is_the_sum_of_its_minute_rows_written_once(clock):
    start = datetime(2026, 3, 2, 9, 40, tzinfo=UTC)
    clock.set(start)
    spread_jobs(start + timedelta(minutes=200), count=200, hours=8)  # finishing before and while it rolls
    for minutes in range(0, 200, 7):  # many roll-ups, some of them doing nothing
        clock.set(start + timedelta(minutes=minutes))
        roll_up("telegram")
        roll_up("telegram")

    cursor = RollupCursor.objects.get(queue="telegram").rolled_until
    hours = sorted(set(JobHour.objects.filter(queue="telegram").values_list("hour", flat=True)))
    assert hours[-1] == stats.floor_hour(cursor) - timedelta(hours=1)
    for hour in hours:
        minutes = Counter()
        for kind, status, count in JobMinute.objects.filter(
            queue="telegram", minute__gte=hour, minute__lt=hour + timedelta(hours=1)
        ).values_list("kind", "status", "count"):
            minutes[(kind, status)] += count
        rows = Counter()
        for kind, status, count in JobHour.objects.filter(queue="telegram", hour=hour).values_list(
            "kind", "status", "count"
        ):
            assert (kind, status) not in rows, "one row per series and hour"
            rows[(kind, status)] += count
        assert rows == minutes


def test_the_chart_bins_are_counted_by_the_database(clock):
    now = datetime(2026, 3, 2, 12, 0, 30, tzinfo=UTC)
    clock.set(now - timedelta(hours=25))
    roll_up("telegram")  # the cursor starts a day before
    since = window_start(now, timedelta(hours=24))  # 12:01 yesterday; bins of 24 minutes
    for minutes_after, status in [(0, "succeeded"), (23, "failed"), (24, "succeeded"), (24 * 59 + 5, "succeeded")]:
        finished_job(since + timedelta(minutes=minutes_after, seconds=10), status=status)
    finished_job(since - timedelta(minutes=1))  # before the window
    clock.set(now)
    roll_up("telegram")
    finished_job(now - timedelta(seconds=2))  # the unrolled tail: the last bin

    assert dict(binned_counts(since, 24)) == {
        (0, "succeeded"): 1,
        (0, "failed"): 1,
        (1, "succeeded"): 1,
        (59, "succeeded"): 2,
    }


def test_the_roll_up_prunes_old_minute_and_hour_rows_but_never_totals(clock):
    now = datetime(2026, 3, 2, 12, 0, 30, tzinfo=UTC)
    clock.set(now - timedelta(minutes=10))
    roll_up("telegram")
    series = {"queue": "telegram", "kind": KINDS[0], "status": "succeeded", "count": 1}
    for age in (timedelta(hours=47), timedelta(hours=49), timedelta(days=3)):
        JobMinute.objects.create(minute=stats.floor_minute(now - age), **series)
    for age in (timedelta(days=89), timedelta(days=91)):
        JobHour.objects.create(hour=stats.floor_hour(now - age), **series)
    JobMinute.objects.create(minute=stats.floor_minute(now - timedelta(days=3)), **{**series, "queue": "downloads"})
    finished_job(now - timedelta(minutes=5))

    clock.set(now)
    roll_up("telegram")

    ages = sorted(now - m for m in JobMinute.objects.filter(queue="telegram").values_list("minute", flat=True))
    assert ages[-1] < timedelta(hours=48)
    assert len(ages) == 2  # the one 47 hours old, and the job just rolled up
    hours = sorted(now - h for h in JobHour.objects.values_list("hour", flat=True))
    assert hours == [timedelta(minutes=60, seconds=30), timedelta(days=89, seconds=30)]  # 11:00, just summed
    assert JobMinute.objects.filter(queue="downloads").exists()  # another queue's roll-up prunes it
    assert JobTotal.objects.get(queue="telegram").count == 1


def test_the_default_cluster_rolls_up_queues_whose_cluster_is_stopped(clock):
    now = timezone.now()
    clock.set(now)
    RollupCursor.objects.create(queue="telegram", rolled_until=stats.floor_minute(now - timedelta(seconds=60)))
    RollupCursor.objects.create(queue="broadcasts", rolled_until=stats.floor_minute(now - timedelta(hours=2)))
    finished_job(now - timedelta(minutes=30), queue="broadcasts")
    finished_job(now - timedelta(minutes=30), queue="downloads")

    roll_up_lagging("default")

    cursors = dict(RollupCursor.objects.values_list("queue", "rolled_until"))
    assert cursors["telegram"] == stats.floor_minute(now - timedelta(seconds=60))  # its own cluster's job
    assert cursors["broadcasts"] == cursors["downloads"] == stats.floor_minute(now - stats.ROLLUP_LAG)
    assert set(JobMinute.objects.values_list("queue", flat=True)) == {"broadcasts", "downloads"}


def test_the_migration_sums_existing_minute_rows_into_hours():
    now = timezone.now()
    cursor = stats.floor_minute(now - timedelta(minutes=1))
    RollupCursor.objects.create(queue="telegram", rolled_until=cursor)
    series = {"queue": "telegram", "kind": KINDS[0], "status": "succeeded"}
    last_hour = stats.floor_hour(cursor) - timedelta(hours=1)
    for minute, count in [(last_hour, 2), (last_hour + timedelta(minutes=59), 3), (stats.floor_hour(cursor), 7)]:
        JobMinute.objects.create(minute=minute, count=count, timed=count, run_b3=count, **series)

    migration = importlib.import_module("queueing.migrations.0004_hourly_stats_alerts_429s")
    migration.hours_from_minutes(apps, None)

    [hour] = JobHour.objects.all()
    assert (hour.hour, hour.count, hour.timed, hour.run_b3) == (last_hour, 5, 5, 5)  # not the unfinished hour
