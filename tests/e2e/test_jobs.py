"""The job contract with real qcluster processes, on whichever backend the settings name."""

import os
import signal

import pytest
from django.utils import timezone

from queueing.errors import PERMANENT, RETRIABLE
from queueing.jobs import retry
from queueing.models import LOST, JobRecord
from tests import jobs
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e


def finished(record: JobRecord) -> JobRecord | None:
    record.refresh_from_db()
    return record if record.is_finished else None


def test_a_job_succeeds(clusters):
    clusters.start("telegram")
    record = jobs.echo.enqueue({"hello": "world"})

    wait_for(lambda: finished(record), what="the echo job")

    assert record.status == JobRecord.Status.SUCCEEDED
    assert record.result == {"hello": "world"}
    assert record.attempts == 1
    assert record.task_id
    assert record.started_at and record.finished_at >= record.started_at


def test_a_retriable_failure_is_retried_with_backoff_and_then_succeeds(clusters, tmp_path):
    clusters.start("telegram", QUEUE_TELEGRAM_BACKOFF="2")
    counter = tmp_path / "runs"
    record = jobs.fail_until.enqueue(str(counter), 3)

    wait_for(lambda: finished(record), timeout=30, what="the flaky job")

    assert record.status == JobRecord.Status.SUCCEEDED
    assert record.result == 3
    assert record.attempts == 3
    assert record.error_class == RETRIABLE  # the last failure stays visible
    # Backoff 2 s then 6 s (+-10%) waited out; when each retry is due is unit-tested with a
    # frozen clock (tests/queueing/test_retry_model.py), a busy machine only makes it later.
    elapsed = (record.finished_at - record.enqueued_at).total_seconds()
    assert elapsed >= 2 * 0.9 + 6 * 0.9


def test_a_permanent_failure_fails_at_once_with_its_reason(clusters):
    clusters.start("telegram")
    record = jobs.fail_permanently.enqueue("chat not found")

    wait_for(lambda: finished(record), what="the failing job")

    assert record.status == JobRecord.Status.FAILED
    assert record.attempts == 1
    assert record.error_class == PERMANENT
    assert "chat not found" in record.last_error
    assert "PermanentError" in record.traceback


def test_retries_are_used_up_then_the_job_fails(clusters, settings):
    settings.QUEUES = {**settings.QUEUES, "telegram": {**settings.QUEUES["telegram"], "retries": 2}}
    clusters.start("telegram", QUEUE_TELEGRAM_BACKOFF="0.5", QUEUE_TELEGRAM_RETRIES="2")
    record = jobs.crash.enqueue("boom")

    wait_for(lambda: finished(record), timeout=30, what="the crashing job to give up")

    assert record.status == JobRecord.Status.FAILED
    assert record.attempts == 3
    assert "KeyError" in record.last_error


def test_a_job_whose_worker_is_killed_runs_again_and_shows_the_lost_attempt(clusters):
    clusters.start("telegram")
    record = jobs.sleep_for.enqueue(3)
    running = wait_for(
        lambda: JobRecord.objects.filter(pk=record.pk, status=JobRecord.Status.RUNNING).first(),
        what="the job to start",
    )

    os.kill(int(running.worker.rsplit(":", 1)[1]), signal.SIGKILL)

    wait_for(lambda: finished(record), timeout=30, what="the job to finish after its worker died")
    assert record.status == JobRecord.Status.SUCCEEDED
    assert record.attempts == 2
    assert record.error_class == LOST
    assert f"{running.worker} died during attempt 1" in record.last_error
    assert record.worker != running.worker


def test_a_cluster_stopped_midway_through_a_housekeeping_transaction_lets_its_running_job_finish(clusters):
    """SIGTERM lands wherever the main thread is. Had the cluster stopped inside the signal
    handler, the housekeeper's open transaction would keep SQLite's write lock while the
    workers finish, and the job's last write would time out after 20 s and fail."""
    cluster = clusters.start("telegram", TEST_DUTY_HOLDS_WRITE_LOCK="1")
    record = jobs.sleep_for.enqueue(1)
    wait_for(
        lambda: JobRecord.objects.filter(pk=record.pk, status=JobRecord.Status.RUNNING).exists(),
        what="the job to start",
    )

    assert cluster.stop() == 0
    record.refresh_from_db()
    assert record.status == JobRecord.Status.SUCCEEDED
    assert "database is locked" not in cluster.log()


def test_a_failed_job_retried_runs_again_and_links_to_the_original(clusters, tmp_path):
    clusters.start("telegram")
    counter = tmp_path / "runs"
    original = jobs.fail_until.enqueue(str(counter), 2)
    JobRecord.objects.filter(pk=original.pk).update(max_attempts=1)
    wait_for(lambda: finished(original), what="the first run to fail")
    assert original.status == JobRecord.Status.FAILED

    again = retry(original)

    wait_for(lambda: finished(again), what="the retried job")
    assert again.status == JobRecord.Status.SUCCEEDED
    assert again.retry_of == original
    assert list(original.retried_by.all()) == [again]


def test_a_rate_limited_job_waits_exactly_retry_after_without_counting_an_attempt(clusters, tmp_path):
    clusters.start("telegram")
    record = jobs.rate_limited_once.enqueue(str(tmp_path / "runs"), 3)

    wait_for(lambda: finished(record), timeout=20, what="the rate-limited job")

    assert record.status == JobRecord.Status.SUCCEEDED
    assert record.attempts == 1
    waited = (record.started_at - record.enqueued_at).total_seconds()
    assert waited >= 3  # exactly 3 s is when it is due: test_retry_model.py, with a frozen clock


def test_jobs_enqueued_while_no_cluster_runs_are_done_once_one_starts(transactional_db, clusters):
    records = [jobs.echo.enqueue(n) for n in range(20)]
    assert JobRecord.objects.filter(status=JobRecord.Status.QUEUED).count() == 20

    clusters.start("telegram")

    wait_for(lambda: JobRecord.objects.filter(status=JobRecord.Status.SUCCEEDED).count() == 20, what="all jobs")
    assert sorted(JobRecord.objects.values_list("result", flat=True)) == list(range(20))
    assert all(r.attempts == 1 for r in JobRecord.objects.filter(pk__in=[r.pk for r in records]))


def test_cancelled_jobs_never_run(clusters):
    record = jobs.echo.enqueue("never")
    assert JobRecord.objects.filter(pk=record.pk).cancel() == 1

    clusters.start("telegram")
    marker = jobs.echo.enqueue("after")
    wait_for(lambda: finished(marker), what="a later job")

    record.refresh_from_db()
    assert record.status == JobRecord.Status.CANCELLED
    assert record.attempts == 0
    assert record.finished_at <= timezone.now()
