"""Cluster heartbeats, GET /healthz and `manage.py queue_health`: with real qcluster
processes for the heartbeats, stubs only for an unreachable broker."""

import json
import subprocess
import sys
from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.db import OperationalError
from django.utils import timezone

from queueing import health
from queueing.models import ClusterHeartbeat, JobRecord
from queueing.queues import queue_names
from tests.clusters import ROOT, cluster_env
from tests.waiting import wait_for

# One worker each: three clusters of four and two workers would crowd a small machine.
SMALL = {f"QUEUE_{queue.upper()}_WORKERS": "1" for queue in ("telegram", "broadcasts", "downloads")}


def beat_of(cluster) -> ClusterHeartbeat | None:
    return ClusterHeartbeat.objects.filter(pid=cluster.process.pid).first()


def healthz(client) -> tuple[int, dict]:
    response = client.get("/healthz")
    assert response["Content-Type"] == "application/json"
    return response.status_code, response.json()


def problems(body: dict) -> set[str]:
    return {check["name"] for check in body["checks"] if check["status"] != "ok"}


def queue_health(*args: str, **env: str) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "queue_health", *args],
        cwd=ROOT,
        env=cluster_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, done.stdout


def fake_beats(*queues: str, age: timedelta = timedelta(0)) -> None:
    seen = timezone.now() - age
    for pid, queue in enumerate(queues, start=1):
        ClusterHeartbeat.objects.create(
            queue=queue, host="elsewhere", pid=pid, workers=2, started_at=seen - timedelta(hours=1), last_seen=seen
        )


@pytest.mark.e2e
def test_a_cluster_beats_with_its_queue_and_takes_its_heartbeat_away_when_stopped(clusters):
    cluster = clusters.start("telegram", **SMALL)

    beat = wait_for(lambda: beat_of(cluster), what="the telegram cluster's heartbeat")
    assert beat.queue == "telegram"
    assert beat.workers == 1
    first_seen = beat.last_seen
    wait_for(lambda: beat_of(cluster).last_seen > first_seen, what="a second beat")

    cluster.stop()
    assert beat_of(cluster) is None


@pytest.mark.e2e
def test_the_default_cluster_beats_as_default(clusters):
    cluster = clusters.start("default")

    beat = wait_for(lambda: beat_of(cluster), what="the default cluster's heartbeat")
    assert beat.queue == "default"


@pytest.mark.e2e
def test_healthz_and_queue_health_follow_the_clusters(clusters, client):
    running = {queue: clusters.start(queue, **SMALL) for queue in queue_names()}
    wait_for(lambda: all(beat_of(cluster) for cluster in running.values()), what="every cluster's heartbeat")

    status, body = healthz(client)
    assert (status, body["status"], problems(body)) == (200, "ok", set())
    assert {"database", "broker:telegram", "cluster:telegram", "cluster:downloads"} <= {
        check["name"] for check in body["checks"]
    }
    assert queue_health()[0] == 0

    running["broadcasts"].stop()

    status, body = healthz(client)
    assert (status, body["status"], problems(body)) == (503, "down", {"cluster:broadcasts"})
    code, out = queue_health("--json")
    assert code == 2
    assert json.loads(out)["status"] == "down"


@pytest.mark.e2e
def test_a_killed_cluster_turns_healthz_down_once_its_heartbeat_is_stale(clusters, client, settings):
    settings.HEARTBEAT_TIMEOUT = 3
    fake_beats("broadcasts", "downloads", age=-timedelta(hours=1))  # they stay fresh throughout
    cluster = clusters.start("telegram", **SMALL)
    wait_for(lambda: beat_of(cluster), what="the telegram cluster's heartbeat")
    assert healthz(client)[0] == 200

    cluster.kill()

    wait_for(lambda: healthz(client)[0] == 503, timeout=10, what="/healthz to notice the dead cluster")
    assert problems(healthz(client)[1]) == {"cluster:telegram"}


@pytest.mark.django_db
def test_an_unreachable_broker_is_down(client, monkeypatch):
    fake_beats(*queue_names())

    class Broker:
        def __init__(self, queue: str):
            self.queue = queue

        def ping(self) -> bool:
            if self.queue == "downloads":
                raise ConnectionError("Error 111 connecting to 10.0.0.9:6379")
            return True

    monkeypatch.setattr(health, "broker_for", Broker)

    status, body = healthz(client)
    assert status == 503
    assert problems(body) == {"broker:downloads"}
    assert "10.0.0.9" not in json.dumps(body)


@pytest.mark.django_db
def test_an_unreachable_database_is_down(monkeypatch):
    def broken_cursor(*args, **kwargs):
        raise OperationalError("could not connect to server at 10.0.0.8")

    fake_beats(*queue_names())
    monkeypatch.setattr(health.connection, "cursor", broken_cursor)

    report = health.liveness()

    assert report.status == health.DOWN
    assert [check.name for check in report.problems] == ["database"]
    assert "10.0.0.8" not in json.dumps(report.as_dict())


@pytest.mark.django_db
def test_healthz_reveals_no_secrets(client):
    fake_beats(*queue_names())
    text = client.get("/healthz").content.decode()

    for secret in [django_settings.SECRET_KEY, django_settings.DATABASES["default"]["NAME"], "redis://", "sqlite"]:
        assert str(secret) not in text


@pytest.mark.django_db
def test_queue_health_exit_status_is_0_healthy_1_degraded_2_down(capsys, settings):
    from django.core.management import call_command

    def run(*args: str) -> int:
        with pytest.raises(SystemExit) as exited:
            call_command("queue_health", *args)
        return exited.value.code

    fake_beats(*queue_names())
    assert run() == 0
    assert capsys.readouterr().out.strip() == "OK"

    settings.ALERT_DISK_FREE_MB = 10**12
    assert run("--detailed") == 1
    out = capsys.readouterr().out
    assert out.startswith("DEGRADED") and "disk:downloads" in out and "database" in out

    settings.ALERT_DISK_FREE_MB = 0
    ClusterHeartbeat.objects.filter(queue="downloads").update(last_seen=timezone.now() - timedelta(minutes=5))
    assert run("--json") == 2
    report = json.loads(capsys.readouterr().out)
    assert report["status"] == "down"
    assert {check["name"] for check in report["checks"] if check["status"] == "down"} == {"cluster:downloads"}


@pytest.mark.django_db
def test_queue_health_is_degraded_by_failures_backlog_and_long_waits(settings):
    fake_beats(*queue_names())
    settings.ALERT_FAILURE_MIN_JOBS = 4
    settings.ALERT_FAILURE_RATE = 0.25
    settings.ALERT_QUEUE_DEPTH = 2
    settings.ALERT_OLDEST_WAIT = 60
    now = timezone.now()
    finished = {"started_at": now - timedelta(seconds=2), "finished_at": now - timedelta(seconds=1)}
    for status in ["succeeded", "succeeded", "failed", "failed"]:
        JobRecord.objects.create(queue="telegram", kind="tests.jobs.echo", status=status, **finished)
    for _ in range(3):
        JobRecord.objects.create(queue="downloads", kind="tests.jobs.echo", dispatched_at=now)
    JobRecord.objects.create(queue="broadcasts", kind="tests.jobs.echo", dispatched_at=now - timedelta(minutes=5))

    report = health.detailed()

    assert report.status == health.DEGRADED
    assert {check.name for check in report.problems} == {"failures:telegram", "depth:downloads", "wait:broadcasts"}


@pytest.mark.django_db
def test_healthz_logs_each_change_of_state_once_not_every_503(client, caplog):
    from django.core.cache import cache

    cache.delete(health.STATE_CACHE_KEY)
    health._seen.clear()
    fake_beats("telegram", "broadcasts")  # downloads has no cluster

    with caplog.at_level("INFO"):
        for _ in range(5):
            assert healthz(client)[0] == 503
        now = timezone.now()
        ClusterHeartbeat.objects.create(queue="downloads", host="h", pid=9, workers=1, started_at=now, last_seen=now)
        for _ in range(3):
            assert healthz(client)[0] == 200
        ClusterHeartbeat.objects.filter(queue="downloads").delete()
        assert healthz(client)[0] == 503

    assert not [r for r in caplog.records if r.name == "django.request"]
    logged = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "queueing.health"]
    assert logged == [
        ("ERROR", "Health: down (cluster:downloads: no cluster has beaten in 15 s)"),
        ("WARNING", "Health: up (database, brokers and clusters alive)"),
        ("ERROR", "Health: down (cluster:downloads: no cluster has beaten in 15 s)"),
    ]


@pytest.mark.django_db
def test_another_web_process_does_not_log_a_change_already_logged(client, caplog):
    from django.core.cache import cache

    cache.delete(health.STATE_CACHE_KEY)
    health._seen.clear()
    fake_beats("telegram", "broadcasts")
    with caplog.at_level("INFO"):
        healthz(client)
        health._seen.clear()  # as a second gunicorn worker, which shares only the cache
        healthz(client)

    assert len([r for r in caplog.records if r.name == "queueing.health"]) == 1
