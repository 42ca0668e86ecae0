"""The operators' queue commands: requeue_failed, clear_queue, prune_jobs and job."""

import io
import re
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from queueing.errors import PERMANENT
from queueing.models import JobRecord
from queueing.queues import queue_names
from tests import jobs

pytestmark = pytest.mark.django_db

Status = JobRecord.Status


def make_job(**fields) -> JobRecord:
    defaults = {"queue": "telegram", "kind": "tests.jobs.echo", "args": ["hello"], "max_attempts": 4}
    return JobRecord.objects.create(**{**defaults, **fields})


def failed_job(**fields) -> JobRecord:
    defaults = {"status": Status.FAILED, "attempts": 1, "finished_at": timezone.now() - timedelta(minutes=1)}
    return make_job(**{**defaults, **fields})


def run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


# requeue_failed


def test_requeue_failed_retries_every_failed_job_not_retried_yet(broker, django_capture_on_commit_callbacks):
    failed = [failed_job(), failed_job(queue="downloads", kind="tests.jobs.crash")]
    retried_before = failed_job()
    make_job(retry_of=retried_before, status=Status.SUCCEEDED)
    others = [make_job(status=status) for status in (Status.CANCELLED, Status.SUCCEEDED, Status.QUEUED)]

    with django_capture_on_commit_callbacks(execute=True):
        output = run("requeue_failed")

    assert output == "Retried 2 failed jobs.\n"
    for job in failed:
        again = job.retried_by.get()
        assert (again.status, again.queue, again.kind, again.args) == (Status.QUEUED, job.queue, job.kind, job.args)
    assert broker("telegram").queue_size() == 1
    assert broker("downloads").queue_size() == 1
    assert retried_before.retried_by.count() == 1
    assert all(not job.retried_by.exists() for job in others)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--queue", "downloads"], {"download"}),
        (["--kind", "tests.jobs.crash"], {"crash", "last_year"}),
        (["--kind", "crash"], {"crash", "last_year"}),
        (["--kind", "rash"], set()),
        (["--since", "2025-03-01T12:00:00+00:00"], {"echo", "download"}),
        (["--since", "2025-03-01T13:00:00+01:00"], {"echo", "download"}),
        (["--since", "2025-03-01"], {"echo", "download", "crash"}),
        (["--queue", "telegram", "--kind", "echo", "--since", "2025-03-01T12:00"], {"echo"}),
    ],
)
def test_requeue_failed_retries_only_the_jobs_its_filters_match(settings, options, expected):
    settings.TIME_ZONE = "UTC"
    day = datetime(2025, 3, 1, tzinfo=UTC)
    jobs = {
        "echo": failed_job(finished_at=day + timedelta(hours=13)),
        "download": failed_job(queue="downloads", finished_at=day + timedelta(hours=12)),
        "crash": failed_job(kind="tests.jobs.crash", finished_at=day + timedelta(hours=1)),
        "last_year": failed_job(kind="tests.jobs.crash", finished_at=day - timedelta(days=365)),
    }

    output = run("requeue_failed", *options)

    assert output == f"Retried {len(expected)} failed jobs.\n"
    assert {name for name, job in jobs.items() if job.retried_by.exists()} == expected


def test_requeue_failed_dry_run_lists_the_jobs_and_changes_nothing(broker):
    jobs = [failed_job(), failed_job(), failed_job(kind="tests.jobs.crash")]

    output = run("requeue_failed", "--kind", "echo", "--dry-run")

    assert output == f"Would retry 2 failed jobs: {jobs[0].pk}, {jobs[1].pk}\n"
    assert JobRecord.objects.count() == 3
    assert broker("telegram").queue_size() == 0
    assert run("requeue_failed", "--queue", "downloads", "--dry-run") == "Would retry 0 failed jobs.\n"


@pytest.mark.parametrize("since", ["yesterday", "2025-13-01", "2025-02-30T10:00", ""])
def test_requeue_failed_refuses_a_since_that_is_no_date(since):
    failed_job()

    with pytest.raises(CommandError, match="is not an ISO date or time"):
        run("requeue_failed", "--since", since)

    assert JobRecord.objects.count() == 1


def test_requeue_failed_refuses_an_unknown_queue():
    failed_job()

    with pytest.raises(CommandError, match="Unknown queue 'telegarm'; queues are telegram, broadcasts, downloads"):
        run("requeue_failed", "--queue", "telegarm")

    assert JobRecord.objects.count() == 1


# clear_queue


def test_clear_queue_cancels_the_waiting_jobs_of_its_queue_and_empties_its_broker(
    broker, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        waiting = [jobs.echo.enqueue(n) for n in range(3)]
    waiting.append(make_job(status=Status.RETRYING, next_retry_at=timezone.now()))
    others = [make_job(status=status) for status in (Status.RUNNING, Status.SUCCEEDED, Status.FAILED)]
    other_queue = make_job(queue="downloads")
    assert broker("telegram").queue_size() == 3

    output = run("clear_queue", "telegram", "--yes")

    assert output == "Cancelled 4 waiting jobs of queue telegram and emptied its broker queue.\n"
    assert broker("telegram").queue_size() == 0
    for job in waiting:
        job.refresh_from_db()
        assert job.status == Status.CANCELLED and job.finished_at and job.next_retry_at is None
    assert [JobRecord.objects.get(pk=job.pk).status for job in others] == [
        Status.RUNNING,
        Status.SUCCEEDED,
        Status.FAILED,
    ]
    other_queue.refresh_from_db()
    assert other_queue.status == Status.QUEUED


def test_clear_queue_refuses_without_yes_when_no_one_can_confirm(monkeypatch):
    job = make_job()
    monkeypatch.setattr("sys.stdin", io.StringIO("yes\n"))

    with pytest.raises(CommandError, match="pass --yes"):
        run("clear_queue", "telegram")

    job.refresh_from_db()
    assert job.status == Status.QUEUED


@pytest.mark.parametrize(
    ("answer", "status"),
    [("yes\n", Status.CANCELLED), ("y\n", Status.CANCELLED), ("\n", Status.QUEUED), ("no\n", Status.QUEUED)],
)
def test_clear_queue_asks_on_a_terminal(broker, monkeypatch, answer, status):
    job = make_job()
    monkeypatch.setattr("sys.stdin", FakeTerminal(answer))

    output = run("clear_queue", "telegram")

    assert output.startswith("Cancel 1 waiting jobs of queue telegram and empty its broker queue? [y/N] ")
    job.refresh_from_db()
    assert job.status == status


def test_clear_queue_refuses_an_unknown_queue():
    with pytest.raises(CommandError, match="Unknown queue 'nope'"):
        run("clear_queue", "nope", "--yes")


# prune_jobs


def test_prune_jobs_deletes_finished_jobs_older_than_the_days_and_nothing_else():
    now = timezone.now()
    long_ago = now - timedelta(days=31)
    old_finished = [make_job(status=status, finished_at=long_ago) for status in JobRecord.FINISHED]
    recent = make_job(status=Status.SUCCEEDED, finished_at=now - timedelta(days=29))
    # Unfinished jobs are kept however old, even with a finished_at left over from an earlier attempt.
    unfinished = [
        make_job(status=status, enqueued_at=long_ago, finished_at=long_ago)
        for status in (Status.QUEUED, Status.RUNNING, Status.RETRYING)
    ]
    retry = make_job(status=Status.SUCCEEDED, retry_of=old_finished[1], finished_at=now)

    output = run("prune_jobs", "--days", "30")

    assert output.startswith("Deleted 3 jobs that finished before ")
    assert set(JobRecord.objects.values_list("pk", flat=True)) == {recent.pk, retry.pk, *(j.pk for j in unfinished)}
    retry.refresh_from_db()
    assert retry.retry_of is None


def test_prune_jobs_dry_run_counts_and_deletes_nothing():
    for _ in range(2):
        make_job(status=Status.FAILED, finished_at=timezone.now() - timedelta(days=8))
    make_job(status=Status.FAILED, finished_at=timezone.now() - timedelta(days=6))

    output = run("prune_jobs", "--days", "7", "--dry-run")

    assert output.startswith("Would delete 2 jobs that finished before ")
    assert JobRecord.objects.count() == 3


def test_prune_jobs_deletes_in_batches():
    for _ in range(5):
        make_job(status=Status.SUCCEEDED, finished_at=timezone.now() - timedelta(days=2))
    with CaptureQueriesContext(connection) as queries:
        assert JobRecord.objects.finished().delete_in_batches(batch_size=2) == 5

    assert len([query for query in queries if query["sql"].startswith("DELETE")]) == 3

    assert not JobRecord.objects.exists()


def test_prune_jobs_keeps_finished_jobs_the_statistics_have_not_counted_yet():
    from queueing.models import JobTotal, RollupCursor
    from queueing.stats import roll_up

    now = timezone.now()
    # The telegram queue's roll-up stopped three days ago (its cluster was down).
    RollupCursor.objects.create(queue="telegram", rolled_until=now - timedelta(days=3))
    counted = make_job(status=Status.SUCCEEDED, finished_at=now - timedelta(days=4))
    uncounted = make_job(status=Status.SUCCEEDED, finished_at=now - timedelta(days=2, hours=12))
    # A queue never rolled up: its first roll-up reaches a day back, so older jobs go.
    never = make_job(queue="downloads", status=Status.FAILED, finished_at=now - timedelta(days=5))
    recent_never = make_job(queue="downloads", status=Status.FAILED, finished_at=now - timedelta(hours=2))

    assert "Would delete 2 jobs" in run("prune_jobs", "--days", "0", "--dry-run")
    output = run("prune_jobs", "--days", "2")

    assert output.startswith("Deleted 2 jobs that finished before ")
    assert "Kept 1 jobs the statistics have not counted yet" in output
    assert set(JobRecord.objects.values_list("pk", flat=True)) == {uncounted.pk, recent_never.pk}
    assert {counted.pk, never.pk}.isdisjoint(JobRecord.objects.values_list("pk", flat=True))

    roll_up("telegram")  # the cluster is back and counts it...
    assert JobTotal.objects.get(queue="telegram").count == 1
    assert run("prune_jobs", "--days", "2").startswith("Deleted 1 jobs")  # ...then it may go


@pytest.mark.parametrize(("options", "message"), [([], "--days"), (["--days", "-1"], "--days must be 0 or more")])
def test_prune_jobs_needs_a_number_of_days(options, message):
    with pytest.raises(CommandError, match=message):
        run("prune_jobs", *options)


# job


def test_job_shows_every_field_the_timings_the_lineage_and_the_traceback():
    original = failed_job()
    enqueued = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    job = failed_job(
        retry_of=original,
        label="Reply to Zoë",
        kwargs={"chat_id": 99},
        error_class=PERMANENT,
        last_error="PermanentError: chat not found",
        traceback="Traceback (most recent call last):\n  ...\nPermanentError: chat not found\n",
        enqueued_at=enqueued,
        started_at=enqueued + timedelta(seconds=2),
        finished_at=enqueued + timedelta(seconds=3, milliseconds=500),
        worker="host:1234",
    )
    again = make_job(retry_of=job)

    output = run("job", str(job.pk))

    for line in [
        f"Job {job.pk}",
        "  kind          tests.jobs.echo",
        "  label         Reply to Zoë",
        '  args          ["hello"]',
        '  kwargs        {"chat_id": 99}',
        "  status        failed",
        "  attempts      1",
        "  max_attempts  4",
        "  error_class   permanent",
        "  last_error    PermanentError: chat not found",
        "  result        null",
        f"  dispatch_id   {job.dispatch_id}",
        "  worker        host:1234",
        "  enqueued    2025-03-01 12:00:00+00:00",
        "  started     2025-03-01 12:00:02+00:00",
        "  finished    2025-03-01 12:00:03.500000+00:00",
        "  runtime     0:00:01.500000",
        f"  retry of    {original}",
        f"  retried by  {again}",
    ]:
        assert f"{line}\n" in output
    assert "\nTraceback\nTraceback (most recent call last):\n  ...\nPermanentError: chat not found\n" in output


def test_job_refuses_an_unknown_id():
    with pytest.raises(CommandError, match="There is no job 404"):
        run("job", "404")


def test_requeue_faileds_help_example_names_a_real_queue_and_kind():
    from queueing.jobs import job_kinds
    from queueing.management.commands.requeue_failed import Command

    example = dict(re.findall(r"--(queue|kind) (\S+)", Command.help))

    assert example["kind"] in job_kinds()
    assert example["queue"] in queue_names()
