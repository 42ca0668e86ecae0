"""Queue throughput: how fast the web side enqueues jobs and one `telegram` cluster runs them.

For each backend -- the embedded default (SQLite in WAL mode + django-q2's ORM broker) and
PostgreSQL + Redis -- it measures, with a job that does nothing (bench.jobs.noop):

  enqueue/s     `enqueue()` called one at a time outside a transaction, as a view does
                (connections handled as around a request), with no cluster running (for
                SQLite with one other connection open, as a running system always has);
  backlog/s     those jobs run by one real `Q_CLUSTER_NAME=telegram manage.py qcluster` (its
                default 4 workers) started afterwards: first started_at to last finished_at;
  e2e/s         as many jobs again, enqueued with that cluster already running: first
                enqueue to last finished_at;
  p50/p95       enqueue -> finish latency of a steady trickle the cluster keeps up with.

Each backend runs in its own subprocess with its own environment, so settings load fresh, on
throwaway storage: a temporary folder for SQLite; for PostgreSQL + Redis a database dropped and
recreated (default bench_queue) and Redis database 9 flushed. All of it is removed afterwards.
PostgreSQL and Redis must be running for that backend.

Run from the project folder (a few minutes at the defaults):

    .venv/bin/python -m bench.queue_throughput [--backend sqlite|postgres|all] [--jobs 2000]

`--repeat N` runs each backend N times and shows the best of each figure (for a busy machine).
`--profile` also counts the SQL statements of one enqueue and one job run and prints a
cProfile summary of the enqueue loop.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench import backends

ROOT = Path(__file__).resolve().parent.parent
QUEUE = "telegram"
BACKENDS = {"sqlite": "sqlite+orm", "postgres": "postgres+redis"}
DEFAULT_POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/bench_queue"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/9"

Result = dict[str, Any]


# --- The parent: one throwaway environment and one subprocess per backend -------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.measure:
        Path(args.result_file).write_text(json.dumps(measure(args)))
        return 0
    names = list(BACKENDS) if args.backend == "all" else [args.backend]
    load_at_start = os.getloadavg()[0]
    results: list[Result] = []
    failed = False
    for name in names:
        runs: list[Result] = []
        for attempt in range(1, args.repeat + 1):
            print(f"=== {BACKENDS[name]}: {args.jobs} jobs (run {attempt} of {args.repeat})", flush=True)
            try:
                runs.append(run_backend(name, args))
            except (subprocess.CalledProcessError, RuntimeError, OSError) as exc:
                print(f"!!! {BACKENDS[name]} failed: {exc}", file=sys.stderr, flush=True)
                failed = True
        if runs:
            results.append(best_of(runs))
    if results:
        print_table(results, args, load_at_start)
    return 1 if failed else 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.queue_throughput",
        description=(__doc__ or "").split("\n\n")[0],
    )
    parser.add_argument("--backend", choices=[*BACKENDS, "all"], default="all")
    parser.add_argument("--jobs", type=int, default=2000, help="jobs per throughput phase (default 2000)")
    parser.add_argument("--trickle-rate", type=float, default=20, help="jobs per second for the latency phase")
    parser.add_argument("--trickle-seconds", type=float, default=10, help="length of the latency phase")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL, help="a database named bench*; it is dropped")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL, help="a Redis database other than 0; it is flushed")
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per backend; the table shows the best of each figure"
    )
    parser.add_argument("--profile", action="store_true", help="count queries per enqueue/run, cProfile enqueue")
    parser.add_argument("--measure", choices=list(BACKENDS), help=argparse.SUPPRESS)
    parser.add_argument("--result-file", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.repeat < 1:
        parser.error("--jobs and --repeat must be at least 1")
    return args


def run_backend(name: str, args: argparse.Namespace) -> Result:
    with backends.throwaway_storage(
        name, f"bench-queue-{name}-", args.postgres_url, lambda: flush_redis(args.redis_url)
    ) as folder:
        options = [
            *("--jobs", str(args.jobs)),
            *("--trickle-rate", str(args.trickle_rate), "--trickle-seconds", str(args.trickle_seconds)),
            *(["--profile"] if args.profile else []),
        ]
        return backends.run_measurement(
            "bench.queue_throughput", name, backend_env(name, folder, args), folder, options
        )


def best_of(runs: list[Result]) -> Result:
    """Each figure from the run that other load on the machine disturbed least."""
    best = dict(runs[0])
    for key in ("enqueue_per_s", "backlog_per_s", "e2e_per_s", "enqueue_busy_per_s", "enqueue_alone_per_s"):
        best[key] = max((run[key] for run in runs), default=None, key=lambda rate: rate or 0)
    for key in ("latency_p50_ms", "latency_p95_ms"):
        best[key] = min(run[key] for run in runs)
    best["notes"] = sorted({note for run in runs for note in run["notes"]})
    best["runs"] = len(runs)
    return best


def backend_env(name: str, var_dir: Path, args: argparse.Namespace) -> dict[str, str]:
    return backends.backend_env(name, var_dir, args.postgres_url, args.redis_url, QUEUEING_JOB_MODULES="bench.jobs")


def flush_redis(url: str) -> None:
    backends.flush_redis(url, check_others=False)


def print_table(results: list[Result], args: argparse.Namespace, load_at_start: float) -> None:
    """The figures, and the machine's load: other processes on it skew them."""
    rows = [
        (
            "backend",
            "enqueue/s",
            "backlog/s",
            "e2e/s",
            "enqueue/s (cluster busy)",
            f"latency p50 / p95 @ {args.trickle_rate:g}/s",
        )
    ]
    for r in results:
        rows.append(
            (
                r["backend"],
                f"{r['enqueue_per_s']:.0f}",
                f"{r['backlog_per_s']:.0f}",
                f"{r['e2e_per_s']:.0f}",
                f"{r['enqueue_busy_per_s']:.0f}",
                f"{r['latency_p50_ms']:.0f} ms / {r['latency_p95_ms']:.0f} ms",
            )
        )
    print()
    backends.print_aligned(rows, underline=True)
    workers = {r["workers"] for r in results}
    runs = " (best of " + "/".join(str(r["runs"]) for r in results) + " runs)" if args.repeat > 1 else ""
    print(
        f"\n{args.jobs} no-op jobs per phase{runs}; complete/s by 1 {QUEUE} cluster with {'/'.join(map(str, workers))} "
        f"workers on {os.cpu_count()} CPUs; 1-min load average {load_at_start:.1f} at start, "
        f"{os.getloadavg()[0]:.1f} at end.\n"
        "  enqueue/s: one at a time from the web side, no cluster running\n"
        "  backlog/s: the cluster started on that backlog, first started_at -> last finished_at\n"
        "  e2e/s:     enqueued while the cluster runs, first enqueue -> last finished_at\n"
        "  latency:   enqueued_at -> finished_at of a steady trickle"
    )
    for r in results:
        if r["enqueue_alone_per_s"] is not None:
            print(
                f"  note ({r['backend']}): enqueue/s is {r['enqueue_alone_per_s']:.0f} when the web process holds "
                "the only connection to the database: closing the last connection to a WAL database "
                "checkpoints it, and with CONN_MAX_AGE=0 every request closes its connection"
            )
        for note in r["notes"]:
            print(f"  note ({r['backend']}): {note}")


# --- The child: one backend, settings loaded from this process's environment ----------------


def measure(args: argparse.Namespace) -> Result:
    import django

    django.setup()

    from django.conf import settings

    from tests.clusters import ClusterProcess

    label = BACKENDS[args.measure]
    n = args.jobs
    workers = settings.QUEUES[QUEUE]["workers"]
    notes: list[str] = []

    with bystander_connection():
        enqueue_rate = enqueue_one_at_a_time(n, "backlog")
    print(f"  enqueue: {n} jobs, {enqueue_rate:.0f}/s", flush=True)

    cluster = ClusterProcess(QUEUE, settings.VAR_DIR)
    started = time.monotonic()
    cluster.start()
    try:
        print(f"  cluster up in {time.monotonic() - started:.1f} s; draining the backlog", flush=True)
        wait_finished("backlog", n, cluster)
        backlog = summarise("backlog", notes)
        backlog_rate = n / span(backlog["first_started"], backlog["last_finished"])
        print(f"  backlog: {backlog_rate:.0f}/s", flush=True)

        from django.utils import timezone

        t0 = timezone.now()
        enqueue_busy_rate = enqueue_one_at_a_time(n, "e2e")
        wait_finished("e2e", n, cluster)
        e2e = summarise("e2e", notes)
        e2e_rate = n / span(t0, e2e["last_finished"])
        print(f"  e2e: {e2e_rate:.0f}/s (enqueue meanwhile {enqueue_busy_rate:.0f}/s)", flush=True)

        count = max(1, round(args.trickle_rate * args.trickle_seconds))
        trickle(count, args.trickle_rate, "trickle")
        wait_finished("trickle", count, cluster)
        summarise("trickle", notes)
        p50, p95 = latency_percentiles("trickle")
        print(f"  trickle: {count} jobs at {args.trickle_rate:g}/s, p50 {p50:.0f} ms, p95 {p95:.0f} ms", flush=True)
    except Exception:
        print(f"--- qcluster log (tail) ---\n{cluster.log()[-4000:]}", file=sys.stderr)
        raise
    finally:
        try:
            cluster.stop()
        except RuntimeError:
            cluster.kill()

    alone_rate = None
    if settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"):
        alone = min(n, 1000)
        alone_rate = enqueue_one_at_a_time(alone, "alone")
        print(f"  enqueue with no other connection open: {alone} jobs, {alone_rate:.0f}/s", flush=True)

    if args.profile:
        profile_queueing(label)

    return {
        "backend": label,
        "workers": workers,
        "enqueue_per_s": enqueue_rate,
        "backlog_per_s": backlog_rate,
        "e2e_per_s": e2e_rate,
        "enqueue_busy_per_s": enqueue_busy_rate,
        "enqueue_alone_per_s": alone_rate,
        "latency_p50_ms": p50,
        "latency_p95_ms": p95,
        "notes": notes,
    }


@contextmanager
def bystander_connection() -> Iterator[None]:
    """For SQLite, an open connection as a running system always has one (another web worker, a
    cluster): closing the last connection to a WAL database checkpoints it, which would dominate
    an enqueue measured with nothing else running. Nothing to do for other databases."""
    from django.conf import settings

    database = settings.DATABASES["default"]
    if not database["ENGINE"].endswith("sqlite3"):
        yield
        return
    bystander = sqlite3.connect(database["NAME"])
    try:
        bystander.execute("SELECT count(*) FROM sqlite_master").fetchall()
        yield
    finally:
        bystander.close()


def _enqueue_noop(label: str) -> None:
    """What a view does: a request's connection handling around one `enqueue()`, no transaction."""
    from django.db import close_old_connections

    from bench.jobs import noop
    from queueing.jobs import enqueue

    close_old_connections()  # request_started
    enqueue(noop, label=label)
    close_old_connections()  # request_finished


def enqueue_one_at_a_time(n: int, label: str) -> float:
    start = time.perf_counter()
    for _ in range(n):
        _enqueue_noop(label)
    return n / (time.perf_counter() - start)


def trickle(count: int, rate: float, label: str) -> None:
    start = time.monotonic()
    for i in range(count):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        _enqueue_noop(label)


def wait_finished(label: str, n: int, cluster: Any, timeout: float | None = None) -> None:
    from queueing.models import JobRecord

    timeout = timeout or 60 + n / 10
    deadline = time.monotonic() + timeout
    while True:
        done = JobRecord.objects.filter(label=label, status__in=JobRecord.FINISHED).count()
        if done >= n:
            return
        if cluster.process.poll() is not None:
            raise RuntimeError(f"the qcluster exited ({cluster.process.returncode}) with {done}/{n} {label} jobs done")
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {done}/{n} {label} jobs finished within {timeout:.0f} s")
        time.sleep(0.25)


def summarise(label: str, notes: list[str]) -> Result:
    """First start and last finish of a phase; anything but a clean single successful run is noted."""
    from django.db.models import Count, Max, Min

    from queueing.models import JobRecord

    jobs = JobRecord.objects.filter(label=label)
    summary = jobs.aggregate(first_started=Min("started_at"), last_finished=Max("finished_at"))
    statuses = dict(jobs.order_by().values_list("status").annotate(Count("id")))
    if set(statuses) != {JobRecord.Status.SUCCEEDED}:
        notes.append(f"{label}: statuses {statuses}")
    repeated = jobs.filter(attempts__gt=1).count()
    if repeated:
        notes.append(f"{label}: {repeated} jobs took more than one attempt")
    return summary


def span(start: Any, end: Any) -> float:
    return max((end - start).total_seconds(), 1e-6)


def latency_percentiles(label: str) -> tuple[float, float]:
    from queueing.models import JobRecord

    latencies = [
        (finished - enqueued).total_seconds() * 1000
        for enqueued, finished in JobRecord.objects.filter(label=label).values_list("enqueued_at", "finished_at")
    ]
    if len(latencies) < 2:
        return latencies[0], latencies[0]
    return statistics.median(latencies), statistics.quantiles(latencies, n=20)[18]


def profile_queueing(label: str) -> None:
    """Where the time of an enqueue goes, and which SQL one enqueue and one job run issue
    (the cluster has stopped; the job is run in this process)."""
    import cProfile
    import pstats

    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from queueing.models import JobRecord
    from queueing.runner import run_job

    def show(title: str, queries: list[dict[str, str]]) -> None:
        print(f"  [{label}] {title}: {len(queries)} SQL statements", flush=True)
        for query in queries:
            print(f"      {query['sql'][:150]}")

    with CaptureQueriesContext(connection) as enqueued:
        _enqueue_noop("profile-one")
    show("one enqueue", enqueued.captured_queries)
    record = JobRecord.objects.get(label="profile-one")
    with CaptureQueriesContext(connection) as ran:
        run_job(record.pk, str(record.dispatch_id))
    show("one job run by queueing.runner.run_job (outside django-q2's own broker queries)", ran.captured_queries)

    profiler = cProfile.Profile()
    profiler.runcall(enqueue_one_at_a_time, 300, "profile")
    print(f"  [{label}] cProfile of 300 enqueues, top 15 by cumulative time:", flush=True)
    pstats.Stats(profiler, stream=sys.stdout).strip_dirs().sort_stats("cumulative").print_stats(15)


if __name__ == "__main__":
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    sys.exit(main())
