"""The django-q2 behaviours the job contract designs around, each shown on a real broker."""

from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone
from django_q.brokers.orm import ORM
from django_q.models import OrmQ
from django_q.signing import SignedPackage

from queueing import jobs as queue_jobs
from queueing.models import LOST, JobRecord
from queueing.queues import broker_for
from tests import jobs
from tests.clusters import UnreachableRedis
from tests.waiting import wait_for


def test_every_cluster_leaves_retries_to_queueing_and_outlives_its_timeout():
    clusters = {"default": settings.Q_CLUSTER, **settings.Q_CLUSTER["ALT_CLUSTERS"]}
    for name, conf in clusters.items():
        assert conf["max_attempts"] == 1, f"{name}: django-q2 would redeliver failures (0 = forever)"
        assert conf["retry"] > conf["timeout"], f"{name}: the ORM broker would hand out running tasks again"
        assert conf["queue_limit"] <= conf["workers"], f"{name}: a killed cluster would lose a deep prefetch"
    for name, queue in settings.QUEUES.items():
        assert settings.Q_CLUSTER["ALT_CLUSTERS"][name]["timeout"] == queue["timeout"]


def _payloads(queue: str) -> list[dict]:
    broker = broker_for(queue)
    if isinstance(broker, ORM):
        raw = OrmQ.objects.filter(key=broker.list_key).values_list("payload", flat=True)
    else:
        raw = broker.connection.lrange(broker.list_key, 0, -1)
    return [SignedPackage.loads(payload) for payload in raw]


@pytest.mark.django_db(transaction=True)
def test_each_task_carries_ack_failure_because_alt_cluster_settings_do_not_reach_the_web_process():
    broker_for("telegram").purge_queue()
    record = jobs.echo.enqueue("x")

    [task] = _payloads("telegram")

    assert task["ack_failure"] is True
    assert task["args"] == (record.pk, str(record.dispatch_id))
    broker_for("telegram").purge_queue()


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(not settings.REDIS_URL, reason="Redis broker only")
def test_enqueueing_reuses_one_redis_connection_per_queue():
    broker = broker_for("telegram")
    assert broker_for("telegram") is broker
    jobs.echo.enqueue("warm up")
    clients_before = len(broker.connection.client_list())

    for n in range(50):
        jobs.echo.enqueue(n)

    assert len(broker.connection.client_list()) <= clients_before + 1
    broker.purge_queue()


@pytest.mark.e2e
def test_a_duplicate_delivery_of_a_task_runs_the_job_once(clusters):
    """The ORM broker hands a task out again after `retry`; stale copies must do nothing."""
    record = jobs.echo.enqueue("once")
    queue_jobs.dispatch(record)
    queue_jobs.dispatch(record)

    clusters.start("telegram")

    wait_for(lambda: JobRecord.objects.get(pk=record.pk).is_finished, what="the job")
    wait_for(lambda: not _payloads("telegram"), what="every copy to be consumed")
    record.refresh_from_db()
    assert record.status == JobRecord.Status.SUCCEEDED
    assert record.attempts == 1


@pytest.mark.e2e
@pytest.mark.skipif(not settings.REDIS_URL, reason="with the ORM broker, broker down means database down")
def test_a_job_enqueued_while_redis_is_down_is_dispatched_later(clusters, monkeypatch):
    monkeypatch.setattr(queue_jobs, "broker_for", lambda queue: UnreachableRedis(queue))
    record = jobs.echo.enqueue("kept")
    record.refresh_from_db()
    assert record.status == JobRecord.Status.QUEUED
    assert record.dispatched_at is None
    monkeypatch.undo()

    clusters.start("telegram")

    wait_for(lambda: JobRecord.objects.get(pk=record.pk).is_finished, what="the undispatched job")
    record.refresh_from_db()
    assert record.status == JobRecord.Status.SUCCEEDED
    assert record.result == "kept"


@pytest.mark.e2e
def test_killing_a_whole_cluster_loses_no_job(clusters):
    """With Redis, BLPOP has already taken the prefetched tasks off the broker and nothing
    acknowledges them: a cluster killed outright takes them with it. Housekeeping in the
    next cluster finds every such job and runs it again."""
    env = {"QUEUE_TELEGRAM_TIMEOUT": "4"}
    first = clusters.start("telegram", **env)
    records = [jobs.sleep_for.enqueue(1.5) for _ in range(12)]
    wait_for(
        lambda: JobRecord.objects.filter(status=JobRecord.Status.RUNNING).count() == 4,
        what="four jobs to be running",
    )

    first.kill()
    clusters.start("telegram", **env)

    wait_for(
        lambda: JobRecord.objects.filter(status=JobRecord.Status.SUCCEEDED).count() == len(records),
        timeout=60,
        what="every job to finish after the kill",
    )
    lost = JobRecord.objects.filter(error_class=LOST)
    assert lost.count() >= 4  # at least the four that were running
    assert all(job.attempts == 2 for job in lost)
    assert not JobRecord.objects.exclude(error_class=LOST).filter(attempts__gt=1).exists()


@pytest.mark.e2e
def test_jobs_that_waited_long_for_a_cluster_are_not_taken_for_lost(clusters):
    """Once a cluster starts, it takes tasks into its prefetch before a worker is free:
    missing from the broker for a moment is not lost."""
    env = {"QUEUE_TELEGRAM_TIMEOUT": "2"}
    records = [jobs.sleep_for.enqueue(0.5) for _ in range(16)]
    # Older than the queue's timeout and grace, by the clock housekeeping reads (no need to wait).
    long_ago = timezone.now() - timedelta(seconds=2 + 5 + 1)
    JobRecord.objects.filter(pk__in=[r.pk for r in records]).update(enqueued_at=long_ago, dispatched_at=long_ago)

    clusters.start("telegram", **env)

    wait_for(
        lambda: JobRecord.objects.filter(status=JobRecord.Status.SUCCEEDED).count() == len(records),
        timeout=60,
        what="every job to finish",
    )
    assert not JobRecord.objects.filter(error_class=LOST).exists()
    assert set(JobRecord.objects.values_list("attempts", flat=True)) == {1}
