"""Prometheus metrics.

Two sources, both correct however many web and worker processes there are:
- Queue and job numbers are read from the database when /metrics is scraped
  (`DatabaseCollector`): depth, oldest wait, workers, unfinished jobs, finished-job
  counters and the run time histogram from the rolled-up totals, deliveries by state,
  and Telegram's 429s from the shared rate limiter (queueing.ratelimit counts each in the
  database or Redis as it pauses the key).
  No process keeps them in memory, so no process can disagree.
- Request counts and latency are observed in the web process that served the request.
  gunicorn forks several workers, so prometheus_client runs in multiprocess mode: each
  worker adds to memory-mapped files in PROMETHEUS_MULTIPROC_DIR (set by the settings
  before prometheus_client is first imported), and the scrape sums them. An observation
  is a write to shared memory, never to the database: metrics add no query to the webhook."""

import logging
import time
from collections.abc import Callable, Iterable, Iterator

from django.http import HttpRequest, HttpResponse
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from queueing.heartbeat import alive_clusters
from queueing.models import TIMING_BUCKETS
from queueing.queues import queue_names
from queueing.ratelimit import get_limiter
from queueing.registry import Registry
from queueing.stats import queues_now, rate_limited_waits, totals, unfinished_by_kind

logger = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

HTTP_REQUESTS = Counter("http_requests", "HTTP requests answered, by view and status code.", ["view", "status"])
HTTP_LATENCY = Histogram(
    "http_request_duration_seconds", "Time to answer an HTTP request, by view.", ["view"], buckets=LATENCY_BUCKETS
)


class RequestMetricsMiddleware:
    """Counts and times every request by its URL name (`bots:webhook` for Telegram's
    webhook), so queueing needs to know no other app's views."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        view = match.view_name if match else "unmatched"
        HTTP_LATENCY.labels(view).observe(time.perf_counter() - started)
        HTTP_REQUESTS.labels(view, str(response.status_code)).inc()
        return response


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else f"{bound:g}"


# What apps add to the scrape (broadcasts: its deliveries by state), registered from their
# AppConfig.ready(): each returns metric families read from the database.
MetricCollector = Callable[[], Iterable[Metric]]
collectors: Registry[MetricCollector] = Registry("metric collector")


class DatabaseCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily("queueing_queue_depth", "Jobs queued and not yet started.", labels=["queue"])
        oldest = GaugeMetricFamily(
            "queueing_oldest_wait_seconds", "How long the oldest queued job has waited (0 when none).", labels=["queue"]
        )
        running = GaugeMetricFamily("queueing_jobs_running", "Jobs running now.", labels=["queue"])
        for queue, now in queues_now().items():
            depth.add_metric([queue], now.queued)
            oldest.add_metric([queue], now.oldest_wait or 0.0)
            running.add_metric([queue], now.running)
        yield from (depth, oldest, running)

        clusters = GaugeMetricFamily(
            "queueing_clusters_alive", "qcluster processes with a fresh heartbeat.", labels=["queue"]
        )
        workers = GaugeMetricFamily(
            "queueing_workers_alive", "Worker processes of the live clusters.", labels=["queue"]
        )
        alive: dict[str, list[int]] = {}
        for queue, worker_count in alive_clusters().values_list("queue", "workers"):
            alive.setdefault(queue, []).append(worker_count)
        for queue in sorted({*queue_names(), *alive}):
            clusters.add_metric([queue], len(alive.get(queue, [])))
            workers.add_metric([queue], sum(alive.get(queue, [])))
        yield from (clusters, workers)

        unfinished = GaugeMetricFamily(
            "queueing_jobs_unfinished", "Jobs queued, retrying or running.", labels=["queue", "kind", "status"]
        )
        for (queue, kind, status), jobs in sorted(unfinished_by_kind().items()):
            unfinished.add_metric([queue, kind, status], jobs)
        yield unfinished

        rate_limited = GaugeMetricFamily(
            "queueing_jobs_rate_limited",
            "Jobs waiting out a Telegram 429 (retry_after) before they run again.",
            labels=["queue"],
        )
        for queue, jobs in rate_limited_waits().items():
            rate_limited.add_metric([queue], jobs)
        yield rate_limited
        yield from _throttled()

        finished = CounterMetricFamily(
            "queueing_jobs_finished", "Jobs that finished, by final status.", labels=["queue", "kind", "status"]
        )
        runtime = HistogramMetricFamily(
            "queueing_job_run_seconds", "Run time of the last attempt of finished jobs.", labels=["queue", "kind"]
        )
        runs: dict[tuple[str, str], tuple[list[int], float]] = {}
        for (queue, kind, status), tally in sorted(totals().items()):
            finished.add_metric([queue, kind, status], tally.count)
            buckets, total = runs.get((queue, kind), ([0] * len(TIMING_BUCKETS), 0.0))
            runs[(queue, kind)] = ([a + b for a, b in zip(buckets, tally.run, strict=True)], total + tally.run_sum)
        for (queue, kind), (buckets, total) in runs.items():
            cumulative, seen = [], 0
            for bound, in_bucket in zip(TIMING_BUCKETS, buckets, strict=True):
                seen += in_bucket
                cumulative.append((_le(bound), seen))
            runtime.add_metric([queue, kind], cumulative, total)
        yield from (finished, runtime)

        yield from _registered()


def _registered() -> Iterator[Metric]:
    for name, collect in collectors.items():
        try:
            families = list(collect())
        except Exception:  # one app's broken series must not take the queues' down with it
            logger.exception("Metric collector %s failed", name)
            continue
        yield from families


def _throttled() -> Iterator[Metric]:
    try:
        counts = get_limiter().throttled()
    except Exception:  # Redis away: the database's series still answer
        logger.exception("Could not read the 429 counts from the rate limiter")
        return
    family = CounterMetricFamily(
        "queueing_telegram_429s",
        "Telegram's 429 (Too Many Requests) answers, by rate-limit key (bot:<id>).",
        labels=["key"],
    )
    for key, n in sorted(counts.items()):
        family.add_metric([key], n)
    yield family


def render() -> bytes:
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    registry.register(DatabaseCollector())
    return generate_latest(registry)
