"""GET /metrics: behind a bearer token, in Prometheus' text format, with the queue, job,
request and delivery series; request counts summed over every web process."""

import subprocess
import sys
from datetime import timedelta

import pytest
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families

from queueing import metrics
from queueing.models import JobRecord
from queueing.registry import Registry
from queueing.stats import roll_up
from tests.clusters import ROOT, cluster_env

pytestmark = pytest.mark.django_db

TOKEN = "metrics-token-for-tests"


@pytest.fixture(autouse=True)
def metrics_token(settings):
    settings.METRICS_TOKEN = TOKEN


def scrape(client) -> dict[str, dict[tuple, float]]:
    """name -> {sorted label items: value} for every sample."""
    response = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def value(samples, name: str, **labels) -> float:
    return samples[name].get(tuple(sorted(labels.items())), 0.0)


def test_metrics_need_the_bearer_token(client):
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_metrics_are_off_without_a_token(client, settings):
    settings.METRICS_TOKEN = ""
    assert client.get("/metrics", headers={"Authorization": "Bearer "}).status_code == 404


def test_queue_depth_oldest_wait_and_unfinished_jobs(client):
    now = timezone.now()
    for age in (5, 60, 120):
        JobRecord.objects.create(queue="telegram", kind="tests.jobs.echo", dispatched_at=now - timedelta(seconds=age))
    JobRecord.objects.create(queue="downloads", kind="tests.jobs.sleep_for", status="running", started_at=now)
    JobRecord.objects.create(
        queue="telegram", kind="tests.jobs.echo", status="retrying", error_class="rate_limited", next_retry_at=now
    )

    samples = scrape(client)

    assert value(samples, "queueing_queue_depth", queue="telegram") == 3
    assert value(samples, "queueing_queue_depth", queue="broadcasts") == 0
    assert 120 <= value(samples, "queueing_oldest_wait_seconds", queue="telegram") < 180
    assert value(samples, "queueing_jobs_running", queue="downloads") == 1
    assert value(samples, "queueing_jobs_unfinished", queue="telegram", kind="tests.jobs.echo", status="queued") == 3
    assert value(samples, "queueing_jobs_unfinished", queue="telegram", kind="tests.jobs.echo", status="retrying") == 1
    assert value(samples, "queueing_jobs_rate_limited", queue="telegram") == 1
    assert value(samples, "queueing_clusters_alive", queue="telegram") == 0


def finished_job(minutes_ago: float, run_seconds: float, status: str = "succeeded", **fields) -> JobRecord:
    finished = timezone.now() - timedelta(minutes=minutes_ago)
    started = finished - timedelta(seconds=run_seconds)
    return JobRecord.objects.create(
        queue="telegram",
        kind="tests.jobs.echo",
        status=status,
        dispatched_at=started - timedelta(seconds=1),
        started_at=started,
        finished_at=finished,
        **fields,
    )


def test_finished_jobs_and_run_time_histogram_count_rolled_up_and_recent_jobs_once(client):
    finished_job(10, 0.2)
    finished_job(10, 3)
    finished_job(5, 0.2, status="failed", error_class="permanent")
    assert roll_up("telegram") > 0
    finished_job(0, 0.07)  # too recent to be rolled up: read from the history

    samples = scrape(client)

    series = {"queue": "telegram", "kind": "tests.jobs.echo"}
    assert value(samples, "queueing_jobs_finished_total", status="succeeded", **series) == 3
    assert value(samples, "queueing_jobs_finished_total", status="failed", **series) == 1
    assert value(samples, "queueing_job_run_seconds_count", **series) == 4
    assert value(samples, "queueing_job_run_seconds_bucket", le="0.1", **series) == 1
    assert value(samples, "queueing_job_run_seconds_bucket", le="0.25", **series) == 3
    assert value(samples, "queueing_job_run_seconds_bucket", le="5", **series) == 4
    assert value(samples, "queueing_job_run_seconds_bucket", le="+Inf", **series) == 4
    assert value(samples, "queueing_job_run_seconds_sum", **series) == pytest.approx(3.47, abs=0.01)


def test_webhook_requests_are_counted_and_timed(client):
    before = scrape(client)
    for _ in range(3):
        client.post("/telegram/999/webhook/", data="{}", content_type="application/json")

    after = scrape(client)

    assert value(after, "http_requests_total", view="bots:webhook", status="404") == (
        value(before, "http_requests_total", view="bots:webhook", status="404") + 3
    )
    count = "http_request_duration_seconds_count"
    assert value(after, count, view="bots:webhook") == value(before, count, view="bots:webhook") + 3
    assert value(after, "http_request_duration_seconds_bucket", view="bots:webhook", le="+Inf") >= 3


def run_twice_elsewhere(code: str) -> None:
    """`code` in two other processes with the platform's settings, one after the other."""
    for _ in range(2):
        subprocess.run(
            [sys.executable, "-c", f"import django; django.setup(); {code}"],
            cwd=ROOT,
            env=cluster_env(),
            check=True,
            timeout=60,
        )


def test_requests_of_other_web_processes_are_summed(client):
    """What gunicorn's workers do: each process adds to the shared folder, any of them answers."""
    before = value(scrape(client), "http_requests_total", view="elsewhere", status="200")
    count_two = "from queueing.metrics import HTTP_REQUESTS; HTTP_REQUESTS.labels('elsewhere', '200').inc(2)"
    run_twice_elsewhere(count_two)

    assert value(scrape(client), "http_requests_total", view="elsewhere", status="200") == before + 4


def test_deliveries_by_state_when_broadcasts_has_deliveries(client):
    from django.apps import apps

    try:
        apps.get_model("broadcasts", "Delivery")
    except LookupError:
        pytest.skip("the broadcasts app has no Delivery model yet")
    assert "broadcasts_deliveries" in {
        family.name
        for family in text_string_to_metric_families(
            client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).content.decode()
        )
    }


@pytest.mark.django_db(transaction=True)
def test_telegram_429s_are_counted_over_every_process(client):
    """Each 429 pauses the bot's key in the shared rate limiter, which counts it there: a
    scrape by any web worker sees the 429s of every worker and cluster process."""
    import uuid

    from queueing.ratelimit import get_limiter

    key = f"bot:{uuid.uuid4().hex[:8]}"
    assert (("key", key),) not in scrape(client).get("queueing_telegram_429s_total", {})
    get_limiter().pause(key, 0.01)
    pause_twice = f"from queueing.ratelimit import get_limiter; [get_limiter().pause({key!r}, 0.01) for _ in '12']"
    run_twice_elsewhere(pause_twice)
    try:
        assert value(scrape(client), "queueing_telegram_429s_total", key=key) == 5
    finally:
        limiter = get_limiter()
        if hasattr(limiter, "_client"):
            limiter._client.hdel(limiter.THROTTLED, key)


def test_a_failing_collector_of_an_app_leaves_the_other_series(client, monkeypatch):
    def broken():
        raise RuntimeError("boom")

    def widgets():
        family = GaugeMetricFamily("widgets", "Widgets.")
        family.add_metric([], 3)
        yield family

    collectors = Registry("metric collector")
    collectors.register("broken", broken)
    collectors.register("widgets", widgets)
    monkeypatch.setattr(metrics, "collectors", collectors)

    samples = scrape(client)

    assert value(samples, "widgets") == 3
    assert "queueing_queue_depth" in samples
