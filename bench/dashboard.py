"""Queue dashboard response times with a large job history.

Fills the job history with --jobs records (default 1,000,000) spread over the last 7 days
(6 kinds on the 3 queues; 94 % succeeded, 5 % failed, 1 % cancelled; a few hundred queued
and running), rolls the last 24 hours up into per-minute and hourly statistics as the
housekeepers would, then times the dashboard page, its JSON endpoint, /metrics and /healthz.

    .venv/bin/python -m bench.dashboard                        # both backends
    .venv/bin/python -m bench.dashboard --backend sqlite --jobs 200000

Backends and their throwaway databases are those of bench.queue_throughput. Goal: the
dashboard and the JSON endpoint answer in under 200 ms."""

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from bench import backends
from bench.backends import drop_postgres, recreate_postgres
from bench.queue_throughput import (
    BACKENDS,
    DEFAULT_POSTGRES_URL,
    DEFAULT_REDIS_URL,
    ROOT,
    backend_env,
    flush_redis,
)

KINDS = [
    ("telegram", "bots.tasks.handle_update"),
    ("telegram", "bots.tasks.send_reply"),
    ("broadcasts", "broadcasts.tasks.fan_out"),
    ("broadcasts", "broadcasts.tasks.send_deliveries"),
    ("downloads", "bots.tasks.download"),
    ("downloads", "bots.tasks.upload"),
]
ERROR_CLASSES = ["permanent", "retriable", "lost"]
REPEATS = 15


def main(argv: list[str] | None = None) -> int:
    return backends.run_backends(parse_args(argv), BACKENDS, measure, run_backend, print_table)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = backends.argument_parser("bench.dashboard", __doc__, BACKENDS)
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL.replace("bench_queue", "bench_dashboard"))
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    return parser.parse_args(argv)


def run_backend(name: str, args: argparse.Namespace) -> dict:
    print(f"{args.jobs:,} job records", flush=True)
    with tempfile.TemporaryDirectory(prefix=f"bench-dashboard-{name}-") as tmp:
        env = backend_env(name, Path(tmp), args)
        env.update(ALLOWED_HOSTS="testserver", QUEUEING_JOB_MODULES="")
        if name == "postgres":
            recreate_postgres(args.postgres_url)
            flush_redis(args.redis_url)
        try:
            for command in (["migrate", "--noinput", "-v0"], ["collectstatic", "--noinput", "-v0"]):
                subprocess.run([sys.executable, "manage.py", *command], cwd=ROOT, env=env, check=True)
            result_file = Path(tmp) / "result.json"
            command = [sys.executable, "-m", "bench.dashboard", "--measure", name, "--jobs", str(args.jobs)]
            subprocess.run([*command, "--result-file", str(result_file)], cwd=ROOT, env=env, check=True)
            return json.loads(result_file.read_text())
        finally:
            if name == "postgres":
                drop_postgres(args.postgres_url)
                flush_redis(args.redis_url)


def measure(args: argparse.Namespace) -> dict:
    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.test import Client

    from queueing.queues import queue_names
    from queueing.stats import roll_up

    started = time.perf_counter()
    fill(args.jobs)
    fill_seconds = time.perf_counter() - started
    print(f"filled in {fill_seconds:.0f} s", flush=True)

    started = time.perf_counter()
    for queue in queue_names():
        roll_up(queue)
    rollup_seconds = time.perf_counter() - started
    from queueing.models import JobHour, JobMinute

    rows = {"minute": JobMinute.objects.count(), "hour": JobHour.objects.count()}
    print(
        f"first roll-up of 24 h in {rollup_seconds:.1f} s: {rows['minute']:,} minute rows, {rows['hour']:,} hour rows"
    )

    client = Client()
    client.force_login(User.objects.create_superuser("bench", "bench@example.com", "bench"))
    from django.conf import settings

    settings.METRICS_TOKEN = "bench"
    timings = {}
    requests = [
        *((f"dashboard {h} h", f"/admin/queues/?hours={h}", {}) for h in (1, 6, 24)),
        *((f"JSON {h} h", f"/admin/queues/data.json?hours={h}", {}) for h in (1, 6, 24)),
        ("/metrics", "/metrics", {"Authorization": "Bearer bench"}),
        ("/healthz", "/healthz", {}),
    ]
    for _, url, headers in requests:  # templates compiled and the database's cache warm, as in service
        client.get(url, headers=headers)
    for label, url, headers in requests:
        samples = []
        for _ in range(REPEATS):
            before = time.perf_counter()
            response = client.get(url, headers=headers)
            samples.append((time.perf_counter() - before) * 1000)
            assert response.status_code in (200, 503), (url, response.status_code)
        timings[label] = {"median_ms": statistics.median(samples), "max_ms": max(samples)}
    return {
        "backend": BACKENDS[args.measure],
        "jobs": args.jobs,
        "fill_s": fill_seconds,
        "rollup_s": rollup_seconds,
        "rows": rows,
        "timings": timings,
    }


def fill(jobs: int, batch: int = 5000) -> None:
    from django.db import transaction
    from django.utils import timezone

    from queueing.models import JobRecord

    rng = random.Random(6)
    now = timezone.now()
    span = timedelta(days=7).total_seconds()
    made = 0
    while made < jobs:
        rows = []
        for _ in range(min(batch, jobs - made)):
            queue, kind = rng.choice(KINDS)
            finished = now - timedelta(seconds=rng.random() * span)
            run = rng.lognormvariate(-1.5, 1.2)
            started = finished - timedelta(seconds=run)
            dispatched = started - timedelta(seconds=rng.expovariate(5))
            roll = rng.random()
            status = "succeeded" if roll < 0.94 else "failed" if roll < 0.99 else "cancelled"
            rows.append(
                JobRecord(
                    queue=queue,
                    kind=kind,
                    status=status,
                    attempts=1,
                    error_class=rng.choice(ERROR_CLASSES) if status == "failed" else "",
                    last_error="PermanentError: chat not found" if status == "failed" else "",
                    enqueued_at=dispatched,
                    dispatched_at=dispatched,
                    started_at=started,
                    finished_at=finished,
                )
            )
        with transaction.atomic():
            JobRecord.objects.bulk_create(rows)
        made += len(rows)
    unfinished = [
        JobRecord(queue=queue, kind=kind, status=status, dispatched_at=now - timedelta(seconds=rng.random() * 60))
        for queue, kind in KINDS
        for status in ["queued"] * 40 + ["running"] * 2
    ]
    JobRecord.objects.bulk_create(unfinished)


def print_table(results: list[dict], args: argparse.Namespace) -> None:
    labels = list(results[0]["timings"])
    header = ["", *(f"{r['backend']} median / max" for r in results)]
    rows = [header]
    rows.append(["fill / first roll-up", *(f"{r['fill_s']:.0f} s / {r['rollup_s']:.1f} s" for r in results)])
    for label in labels:
        cells = [f"{r['timings'][label]['median_ms']:.0f} / {r['timings'][label]['max_ms']:.0f} ms" for r in results]
        rows.append([label, *cells])
    print(f"\n{results[0]['jobs']:,} job records; {REPEATS} requests each; load {os.getloadavg()[0]:.1f}")
    backends.print_aligned(rows)


if __name__ == "__main__":
    sys.exit(main())
