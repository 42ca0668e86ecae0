"""queueing.history: the questions apps ask of the job history, and its pruning duty."""

from datetime import timedelta

import pytest
from django.utils import timezone

from queueing import history
from queueing.housekeeping import Housekeeper
from queueing.jobs import retry
from queueing.models import JobRecord
from tests import jobs

pytestmark = pytest.mark.django_db

Status = JobRecord.Status


def finished(job: JobRecord, status: str = Status.FAILED, days_ago: float = 0) -> JobRecord:
    JobRecord.objects.filter(pk=job.pk).update(
        status=status, attempts=job.max_attempts, finished_at=timezone.now() - timedelta(days=days_ago)
    )
    job.refresh_from_db()
    return job


def test_pending_matches_the_kind_and_exactly_these_arguments_of_unfinished_jobs():
    waiting = jobs.echo.enqueue(7)
    jobs.sleep_for.enqueue(8)

    assert history.pending(jobs.echo, 7)
    assert not history.pending(jobs.echo, 8)  # another kind's argument
    assert not history.pending(jobs.echo, 7, 1)  # other arguments
    assert not history.pending(jobs.echo, "7")  # JSON keeps the type

    finished(waiting, Status.SUCCEEDED)
    assert not history.pending(jobs.echo, 7)


def test_ended_before_takes_jobs_that_finished_before_the_moment_however_they_ended():
    old = finished(jobs.echo.enqueue(1), Status.SUCCEEDED, days_ago=2)
    cancelled = finished(jobs.echo.enqueue(2), Status.CANCELLED, days_ago=2)
    finished(jobs.echo.enqueue(3), days_ago=0)
    jobs.echo.enqueue(4)

    ended = history.ended_before(timezone.now() - timedelta(days=1))

    assert set(ended.values_list("pk", flat=True)) == {old.pk, cancelled.pk}


def test_busy_with_names_what_unfinished_or_just_ended_jobs_of_the_kinds_are_about():
    jobs.echo.enqueue(1)
    finished(jobs.echo.enqueue(2), days_ago=0)
    finished(jobs.echo.enqueue(3), days_ago=2)
    jobs.sleep_for.enqueue(4)  # another kind

    assert history.busy_with(jobs.echo, since=timezone.now() - timedelta(days=1)) == {1, 2}
    assert history.busy_with(jobs.echo, jobs.sleep_for, since=timezone.now()) == {1, 4}


def test_a_job_whose_worker_died_on_its_last_attempt_is_not_busy_while_the_others_settle():
    """Nothing follows it: the work it was about may be taken up again at once."""
    lost = finished(jobs.echo.enqueue(1))
    JobRecord.objects.filter(pk=lost.pk).update(error_class=JobRecord.ErrorClass.LOST)
    lost_then_done = finished(jobs.echo.enqueue(2), Status.SUCCEEDED)  # lost once, then ran
    JobRecord.objects.filter(pk=lost_then_done.pk).update(error_class=JobRecord.ErrorClass.LOST)

    assert history.busy_with(jobs.echo, since=timezone.now() - timedelta(days=1)) == {2}


def test_failures_about_a_subject_leave_out_lost_workers_and_come_newest_first():
    older = finished(jobs.echo.enqueue(5), days_ago=2)
    newer = finished(jobs.sleep_for.enqueue(5), days_ago=1)
    lost = finished(jobs.echo.enqueue(5))
    JobRecord.objects.filter(pk=lost.pk).update(error_class=JobRecord.ErrorClass.LOST)
    finished(jobs.echo.enqueue(6))  # about something else
    finished(jobs.echo.enqueue(5), Status.SUCCEEDED)

    failures = history.failures(jobs.echo, jobs.sleep_for, about=5)

    assert list(failures.values_list("pk", flat=True)) == [newer.pk, older.pk]


def test_latest_retry_follows_the_line_of_retries_to_its_newest_job():
    original = finished(jobs.echo.enqueue(1))
    assert history.latest_retry(original.pk) == original.pk

    first = finished(retry(original))
    second = retry(first)
    jobs.echo.enqueue(1)  # same work, but nobody's retry

    assert history.latest_retry(original.pk) == second.pk
    assert history.latest_retry(first.pk) == second.pk
    assert history.latest_retry(None) is None


def test_is_last_attempt_once_the_attempts_are_used_or_the_job_is_gone():
    job = jobs.echo.enqueue(1)
    JobRecord.objects.filter(pk=job.pk).update(attempts=job.max_attempts - 1)
    assert not history.is_last_attempt(job.pk)

    JobRecord.objects.filter(pk=job.pk).update(attempts=job.max_attempts)
    assert history.is_last_attempt(job.pk)

    job.delete()
    assert history.is_last_attempt(job.pk)
    assert history.is_last_attempt(None)


def test_the_default_cluster_prunes_finished_jobs_older_than_job_history_days(settings):
    settings.JOB_HISTORY_DAYS = 30
    old = finished(jobs.echo.enqueue(1), days_ago=31)
    recent = finished(jobs.echo.enqueue(2), days_ago=29)
    waiting = jobs.echo.enqueue(3)
    JobRecord.objects.filter(pk=waiting.pk).update(enqueued_at=timezone.now() - timedelta(days=40))

    assert history.prune_duty in {duty for _, duty in Housekeeper("default").duties}
    assert history.prune_duty("default") == 1

    assert set(JobRecord.objects.values_list("pk", flat=True)) == {recent.pk, waiting.pk}
    assert not JobRecord.objects.filter(pk=old.pk).exists()


def test_pruning_takes_a_few_batches_a_run_and_none_when_the_history_is_kept_for_ever(settings, monkeypatch):
    monkeypatch.setattr(history, "PRUNE_BATCHES", 2)  # of 500: a run deletes 1,000 at most
    two_days_ago = timezone.now() - timedelta(days=2)
    JobRecord.objects.bulk_create(
        JobRecord(queue="telegram", kind=jobs.echo.kind, status=Status.SUCCEEDED, finished_at=two_days_ago)
        for _ in range(1200)
    )

    settings.JOB_HISTORY_DAYS = 0
    assert history.prune_duty("default") == 0

    settings.JOB_HISTORY_DAYS = 1
    assert history.prune_duty("default") == 1000
    assert history.prune_duty("default") == 200
    assert not JobRecord.objects.exists()
