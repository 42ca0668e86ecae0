"""The queue dashboard and its JSON endpoint: who may see them, and that they show what the
queues hold, with real qcluster processes where workers matter."""

import re
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.urls import reverse
from django.utils import timezone

from queueing.models import Alert, ClusterHeartbeat, JobRecord
from queueing.queues import queue_names
from tests import jobs
from tests.waiting import wait_for

DASHBOARD = "queueing:dashboard"
JSON = "queueing:dashboard_json"


@pytest.fixture(autouse=True)
def static_files_without_a_manifest(settings):
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


def data(client, hours: int = 1) -> dict:
    response = client.get(reverse(JSON), {"hours": hours})
    assert response.status_code == 200
    return response.json()


def queue(body: dict, name: str) -> dict:
    return next(q for q in body["queues"] if q["queue"] == name)


def beat(queue: str, age: timedelta = timedelta(0), pid: int = 1) -> ClusterHeartbeat:
    seen = timezone.now() - age
    return ClusterHeartbeat.objects.create(
        queue=queue, host="worker-1", pid=pid, workers=2, started_at=seen - timedelta(minutes=10), last_seen=seen
    )


@pytest.mark.django_db
@pytest.mark.parametrize("name", [DASHBOARD, JSON])
def test_only_staff_with_the_dashboard_permission_see_the_dashboard(client, name):
    url = reverse(name)
    assert client.get(url).status_code == 302
    client.force_login(User.objects.create_user("member", password="x"))
    response = client.get(url)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    operator = User.objects.create_user("operator", password="x", is_staff=True)
    client.force_login(operator)
    assert client.get(url).status_code == 403
    operator.user_permissions.add(Permission.objects.get(codename="view_queue_dashboard"))
    assert client.get(url).status_code == 200


@pytest.mark.django_db
def test_the_admin_index_links_to_the_dashboard(admin_client):
    assert reverse(DASHBOARD) in admin_client.get(reverse("admin:index")).content.decode()


@pytest.mark.django_db
def test_the_numbers_of_the_queues(admin_client):
    now = timezone.now()
    for _ in range(3):
        JobRecord.objects.create(queue="telegram", kind="tests.jobs.echo", dispatched_at=now - timedelta(seconds=90))
    JobRecord.objects.create(queue="downloads", kind="tests.jobs.sleep_for", status="running", started_at=now)
    timings = {"dispatched_at": now - timedelta(seconds=3), "started_at": now - timedelta(seconds=2)}
    for _ in range(4):
        JobRecord.objects.create(
            queue="telegram", kind="tests.jobs.echo", status="succeeded", finished_at=now, **timings
        )
    failed = JobRecord.objects.create(
        queue="telegram",
        kind="tests.jobs.fail_permanently",
        status="failed",
        error_class="permanent",
        last_error="PermanentError: chat not found",
        finished_at=now,
        **timings,
    )
    beat("telegram")
    beat("downloads", age=timedelta(minutes=5), pid=2)

    body = data(admin_client)

    telegram = queue(body, "telegram")
    assert (telegram["depth"], telegram["running"], telegram["clusters_alive"], telegram["workers_alive"]) == (
        3,
        0,
        1,
        2,
    )
    assert 90 <= telegram["oldest_wait_seconds"] < 150
    assert (telegram["failed_last_hour"], telegram["finished_last_hour"]) == (1, 5)
    assert queue(body, "downloads")["running"] == 1
    assert queue(body, "downloads")["clusters_alive"] == 0
    assert body["finished"] == 5
    echo = next(k for k in body["by_kind"] if k["kind"] == "tests.jobs.echo")
    assert echo["jobs"] == 4
    assert 0.5 <= echo["wait_p50"] <= 1 and 1 <= echo["run_p95"] <= 2.5
    assert sum(point["finished_per_minute"] for point in body["throughput"]) == 5
    assert sum(point["failed_per_minute"] for point in body["throughput"]) == 1
    [by_class] = body["failures_by_class"]
    assert (by_class["error_class"], by_class["jobs"]) == ("permanent", 1)
    assert by_class["url"].endswith("?queue=telegram&status=failed&error_class=permanent")
    [recent] = body["recent_failures"]
    assert recent["id"] == failed.pk and recent["error_class"] == "permanent"
    assert {alert["name"] for alert in body["alerts"]} == {"cluster:broadcasts", "cluster:downloads"}
    assert {w["queue"]: w["alive"] for w in body["workers"]} == {"telegram": True, "downloads": False}

    page = admin_client.get(reverse(DASHBOARD)).content.decode()
    assert '<svg id="throughput-chart"' in page
    assert 'data-alert="cluster:downloads"' in page
    assert by_class["url"].replace("&", "&amp;") in page


@pytest.mark.django_db
def test_thresholds_raise_banners(admin_client, settings):
    for name in queue_names():
        beat(name, pid=hash(name) % 10000)
    settings.ALERT_QUEUE_DEPTH = 1
    settings.ALERT_OLDEST_WAIT = 30
    assert data(admin_client)["alerts"] == []

    for _ in range(2):
        JobRecord.objects.create(
            queue="broadcasts", kind="tests.jobs.echo", dispatched_at=timezone.now() - timedelta(minutes=1)
        )

    assert {alert["name"] for alert in data(admin_client)["alerts"]} == {"depth:broadcasts", "wait:broadcasts"}


@pytest.mark.django_db
def test_the_window_is_one_six_or_twenty_four_hours(admin_client):
    JobRecord.objects.create(
        queue="telegram", kind="tests.jobs.echo", status="succeeded", finished_at=timezone.now() - timedelta(hours=3)
    )
    assert data(admin_client, hours=1)["finished"] == 0
    assert data(admin_client, hours=6)["finished"] == 1
    assert data(admin_client, hours=24)["finished"] == 1
    assert data(admin_client, hours=7)["hours"] == 1


@pytest.mark.e2e
def test_the_dashboard_follows_a_running_cluster(clusters, admin_client):
    cluster = clusters.start("telegram", QUEUE_TELEGRAM_WORKERS="1")
    wait_for(lambda: queue(data(admin_client), "telegram")["clusters_alive"] == 1, what="the cluster's heartbeat")
    [worker] = [w for w in data(admin_client)["workers"] if w["queue"] == "telegram"]
    assert (worker["pid"], worker["workers"], worker["alive"]) == (cluster.process.pid, 1, True)

    records = [jobs.sleep_for.enqueue(1.5) for _ in range(3)]

    telegram = wait_for(
        lambda: (q := queue(data(admin_client), "telegram"))["running"] == 1 and q, what="a job running"
    )
    assert telegram["depth"] == 2
    wait_for(lambda: data(admin_client)["finished"] == 3, timeout=30, what="three finished jobs on the dashboard")
    assert all(r.status == "succeeded" for r in JobRecord.objects.filter(pk__in=[r.pk for r in records]))
    assert queue(data(admin_client), "telegram")["depth"] == 0

    cluster.stop()
    body = data(admin_client)
    assert queue(body, "telegram")["clusters_alive"] == 0
    assert "cluster:telegram" in {alert["name"] for alert in body["alerts"]}


def test_the_chart_has_dated_ticks_one_label_per_axis_and_values_in_tooltips(settings):
    from queueing.dashboard import CHART_BINS, Point, chart_svg

    settings.TIME_ZONE = "UTC"
    start = datetime(2026, 12, 2, 11, 0, tzinfo=UTC)
    points = [Point(start + timedelta(minutes=24 * i), 0.0, 0.0) for i in range(CHART_BINS)]
    points[5] = Point(points[5].start, 3.5, 0.25)

    svg = chart_svg(points)

    ticks = re.findall(r'<text class="x-tick"[^>]*>([^<]*)</text>', svg)
    assert ticks == ["2 Dec 11:00", "2 Dec 15:00", "2 Dec 19:00", "2 Dec 23:00", "3 Dec 03:00", "3 Dec 07:00"]
    assert re.findall(r'<text class="axis-label"[^>]*>([^<]*)</text>', svg) == ["Time (UTC)", "Jobs per minute"]
    assert re.findall(r'<text class="y-tick"[^>]*>([^<]*)</text>', svg) == ["0", "2.5", "5"]
    assert svg.count('<rect class="bin"') == CHART_BINS
    assert "<title>2 Dec 13:00–13:24: 3.5 finished, 0.25 failed per minute</title>" in svg


def test_the_chart_of_one_hour_shows_times_only(settings):
    from queueing.dashboard import CHART_BINS, Point, chart_svg

    settings.TIME_ZONE = "UTC"
    start = datetime(2026, 12, 2, 11, 0, tzinfo=UTC)

    svg = chart_svg([Point(start + timedelta(minutes=i), 0.0, 0.0) for i in range(CHART_BINS)])

    assert re.findall(r'<text class="x-tick"[^>]*>([^<]*)</text>', svg)[:2] == ["11:00", "11:10"]


@pytest.mark.parametrize(("value", "top"), [(0, 1), (1, 1), (1.5, 2), (3, 5), (7, 10), (12, 20), (101, 200)])
def test_the_charts_top_is_a_round_number(value, top):
    from queueing.dashboard import nice_ceiling

    assert nice_ceiling(value) == top


@pytest.mark.django_db
def test_each_queue_has_a_status_colour_and_clusters_an_uptime_in_words(admin_client):
    beat("telegram")

    body = data(admin_client)
    page = admin_client.get(reverse(DASHBOARD)).content.decode()

    assert queue(body, "telegram")["status"] == "ok"
    assert queue(body, "downloads")["status"] == "down"
    assert '<span class="queue-status queue-status-down">down</span>' in page
    assert '<span class="queue-status queue-status-ok">ok</span>' in page
    [worker] = body["workers"]
    assert worker["uptime"] == "10 min"
    assert f'title="{worker["uptime_seconds"]} s">10 min</td>' in page


def failed_now(kind: str, attempts: int, error_class: str, last_error: str) -> JobRecord:
    return JobRecord.objects.create(
        queue="telegram",
        kind=kind,
        status="failed",
        attempts=attempts,
        error_class=error_class,
        last_error=last_error,
        finished_at=timezone.now(),
    )


@pytest.mark.django_db
def test_a_recent_failure_reads_as_a_sentence_with_the_detail_beside(admin_client):
    failed_now("bots.tasks.handle_update", 1, "permanent", "Forbidden: Forbidden: bot was blocked by the user")

    [recent] = data(admin_client)["recent_failures"]
    page = admin_client.get(reverse(DASHBOARD)).content.decode()

    assert recent["sentence"] == "The member blocked the bot. Failed after 1 attempt."
    assert (
        "The member blocked the bot. Failed after 1 attempt.<details><summary>Technical detail</summary>"
        "<code>Forbidden: Forbidden: bot was blocked by the user</code></details>"
    ) in page


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("chats", "sent", "note"),
    [
        ([], 0, "nobody told (ALERT_CHAT_IDS is empty)"),
        ([4242], 0, "nobody told yet (the message has not gone out)"),
        ([4242], 1, "operators told"),
    ],
)
def test_an_alert_says_operators_were_told_only_when_a_message_went_out(admin_client, settings, chats, sent, note):
    """`notifications` counts the messages Telegram accepted (queueing.alerts.send_alert)."""
    settings.ALERT_CHAT_IDS = chats
    for name in queue_names():
        if name != "downloads":
            beat(name, pid=hash(name) % 10000)
    now = timezone.now()
    Alert.objects.create(key="cluster:downloads", level="down", raised_at=now, last_notified_at=now, notifications=sent)

    [alert] = data(admin_client)["alerts"]

    assert alert["name"] == "cluster:downloads"
    assert alert["note"].endswith(f", {note}")
    assert ("operators told" in alert["note"]) is bool(sent)


@pytest.mark.django_db
def test_failed_jobs_are_grouped_by_cause_and_never_called_retriable(admin_client):
    failed_now("tests.jobs.crash", 4, "retriable", "KeyError: 'chat'")

    [group] = data(admin_client)["failures_by_class"]
    page = admin_client.get(reverse(DASHBOARD)).content.decode()

    assert (group["error_class"], group["label"]) == ("retriable", "errors, out of attempts")
    assert ">errors, out of attempts</a>" in page
    assert ">retriable<" not in page
    assert "It stopped with an error. Failed after 4 attempts." in page
