"""The housekeeping loop of every qcluster: duties at their intervals, failures reported once."""

import logging
import os
import subprocess
import sys
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from queueing import housekeeping
from queueing.heartbeat import Heartbeat
from queueing.housekeeping import Housekeeper
from queueing.models import ClusterHeartbeat, JobRecord
from queueing.queues import broker_for, dispatch_ids_in_broker
from queueing.registry import Registry
from tests import jobs


def test_a_failing_duty_is_logged_once_until_it_works_again(db, monkeypatch, caplog):
    database_up = False

    def duty(queue: str) -> int:
        if not database_up:
            raise ConnectionError("database is down")
        return 0

    monkeypatch.setattr(housekeeping, "duties", Registry("housekeeping duty"))
    housekeeping.register_duty("default", 0.0, duty)
    keeper = Housekeeper("default")

    with caplog.at_level(logging.INFO, logger="queueing.housekeeping"):
        for _ in range(5):
            keeper.tick()
        database_up = True
        keeper.tick()
        keeper.tick()

    about_duty = [record for record in caplog.records if record.getMessage().startswith("Housekeeping duty ")]
    messages = [record.getMessage() for record in about_duty]
    assert messages == [
        "Housekeeping duty for queue default failed; retrying quietly until it works",
        "Housekeeping duty for queue default works again",
    ]
    assert about_duty[0].exc_info[0] is ConnectionError


def test_registered_duties_run_only_on_their_cluster(monkeypatch):
    def dispatch(queue: str) -> int:
        return 0

    monkeypatch.setattr(housekeeping, "duties", Registry("housekeeping duty"))
    housekeeping.register_duty("telegram", 0.05, dispatch)

    assert (0.05, dispatch) in Housekeeper("telegram").duties
    assert dispatch not in {duty for _, duty in Housekeeper("downloads").duties}
    assert Housekeeper("telegram").tick_seconds == 0.05
    assert Housekeeper("downloads").tick_seconds == Housekeeper.TICK


def running_job(worker: str, started_seconds_ago: float = 1) -> JobRecord:
    now = timezone.now()
    return JobRecord.objects.create(
        queue="telegram",
        kind="tests.jobs.echo",
        args=["hello"],
        max_attempts=4,
        status=JobRecord.Status.RUNNING,
        attempts=1,
        worker=worker,
        started_at=now - timedelta(seconds=started_seconds_ago),
    )


def beat(machine: str, queue: str, seconds_ago: float, pid: int | None = None) -> None:
    seen = timezone.now() - timedelta(seconds=seconds_ago)
    pid = pid or ClusterHeartbeat.objects.count() + 1
    ClusterHeartbeat.objects.create(queue=queue, host=machine, pid=pid, workers=1, started_at=seen, last_seen=seen)


def test_a_job_of_a_machine_whose_clusters_stopped_beating_runs_again_long_before_its_timeout(db, broker, settings):
    """Another machine cannot look up a pid: a worker is dead when no cluster of its queue on
    its machine has beaten within HEARTBEAT_TIMEOUT. A machine that beats only for another
    queue (its telegram cluster lives, its broadcasts cluster was killed) counts as dead too."""
    settings.MACHINE_NAME = "machine-b"
    beat("machine-a", "telegram", seconds_ago=settings.HEARTBEAT_TIMEOUT + 1)
    beat("machine-a", "broadcasts", seconds_ago=0)
    beat("machine-c", "telegram", seconds_ago=0)
    lost = running_job("machine-a:4242")
    alive = running_job("machine-c:4242")

    assert housekeeping.recover_dead_workers("telegram") == 1

    lost.refresh_from_db()
    assert lost.status == JobRecord.Status.QUEUED
    assert lost.last_error == "Worker machine-a:4242 died during attempt 1"
    alive.refresh_from_db()
    assert alive.status == JobRecord.Status.RUNNING


def test_a_job_of_a_machine_that_beats_is_left_running(db, broker, settings):
    settings.MACHINE_NAME = "machine-b"
    beat("machine-a", "telegram", seconds_ago=1)
    job = running_job("machine-a:4242", started_seconds_ago=settings.QUEUES["telegram"]["timeout"] - 5)

    assert housekeeping.recover_dead_workers("telegram") == 0
    job.refresh_from_db()
    assert job.status == JobRecord.Status.RUNNING


def test_a_stopping_cluster_beats_until_its_running_jobs_have_ended_then_its_heartbeat_goes(
    transactional_db, monkeypatch
):
    """Other machines take the jobs of a machine that stopped beating for lost: a cluster
    finishing its jobs after SIGTERM (up to the queue's timeout) must go on beating."""
    monkeypatch.setattr(Heartbeat, "INTERVAL", 0.1)
    keeper = Housekeeper("telegram")
    keeper.beat()
    first = ClusterHeartbeat.objects.get().last_seen
    seen_while_stopping = []

    def stop_cluster() -> None:
        time.sleep(0.5)
        seen_while_stopping.append(ClusterHeartbeat.objects.get().last_seen)
        connection.close()

    keeper.beat_while(stop_cluster)

    assert seen_while_stopping[0] > first
    assert not ClusterHeartbeat.objects.exists()


def ended_process() -> int:
    """The pid of a process that is gone, as a SIGKILLed cluster's is."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def taken_by_a_cluster(job: JobRecord) -> JobRecord:
    """Its task taken from the broker, as a cluster takes tasks ahead of its busy workers."""
    assert broker_for(job.queue).dequeue()
    JobRecord.objects.filter(pk=job.pk).update(dispatched_at=timezone.now() - timedelta(seconds=5))
    job.refresh_from_db()
    return job


def test_a_cluster_starting_after_a_killed_one_dispatches_again_the_jobs_it_took_and_never_started(
    transactional_db, broker, settings
):
    """The killed cluster's heartbeat is still fresh, but its process is gone: the job it took
    runs again before the new cluster takes its first task, not after recover_lost_jobs'
    patience (twice the queue's timeout), and without spending an attempt: it never started."""
    beat(settings.MACHINE_NAME, "telegram", seconds_ago=0, pid=ended_process())
    taken = taken_by_a_cluster(jobs.echo.enqueue("taken"))
    waiting = jobs.echo.enqueue("waiting")
    JobRecord.objects.filter(pk=waiting.pk).update(dispatched_at=taken.dispatched_at)

    Housekeeper("telegram").before_start()

    again = JobRecord.objects.get(pk=taken.pk)
    assert (again.status, again.attempts) == (JobRecord.Status.QUEUED, 0)
    assert again.dispatch_id != taken.dispatch_id, "the task the dead cluster took can no longer run it"
    assert dispatch_ids_in_broker("telegram") == {str(again.dispatch_id), str(waiting.dispatch_id)}
    assert JobRecord.objects.get(pk=waiting.pk).dispatch_id == waiting.dispatch_id


@pytest.mark.parametrize("machine", ["machine-a", "this machine"])
def test_a_starting_cluster_leaves_the_jobs_a_live_cluster_of_its_queue_may_be_about_to_start(
    transactional_db, broker, settings, machine
):
    """A cluster of the queue that beats, on another machine or on this one with its process
    alive, may have taken them: recover_lost_jobs waits for it to start them."""
    if machine == "this machine":
        beat(settings.MACHINE_NAME, "telegram", seconds_ago=0, pid=os.getppid())
    else:
        beat(machine, "telegram", seconds_ago=0)
    taken = taken_by_a_cluster(jobs.echo.enqueue("taken"))

    Housekeeper("telegram").before_start()

    assert JobRecord.objects.get(pk=taken.pk).dispatch_id == taken.dispatch_id
    assert not dispatch_ids_in_broker("telegram")
