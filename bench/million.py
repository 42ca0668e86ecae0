"""A broadcast to a million members on PostgreSQL + Redis: fan-out, first message, memory, pages.

In a throwaway database (bench_h_scale_million by default; dropped and recreated, dropped at
the end) and a Redis database of its own (flushed), it:

  1. creates --members subscribed members with one INSERT ... SELECT generate_series;
  2. times the fan-out of a broadcast to all of them on its own, as start_broadcast makes it
     (a first batch of FIRST_BATCH members, then `fan_out_more` until complete: FAN_OUT_BATCH
     members per transaction), and that first batch alone, and the deliveries table's size
     (pg_total_relation_size) per million rows; then deletes them;
  3. starts real `telegram` and `broadcasts` clusters at TELEGRAM_RATE_LIMIT=30 against a fake
     Telegram in a process of its own enforcing 30/s, enqueues start_broadcast as the admin
     does, and measures from that moment: when the broadcast turns `sending` (its first batch
     made), when the first sendMessage reaches the fake, when the fan-out is complete, and
     for --seconds of sending: the rate, and every 5 s the progress page, its JSON, the queue
     dashboard, its JSON (Django's test client in this process, as a logged-in superuser:
     the view's time, no HTTP) and `broadcast_status ID` (call_command); the peak RSS of
     every process of both clusters, of the fake and of this process (VmRSS every 0.5 s);
  4. runs `cancel_broadcast ID` and measures, from the moment it is run, how long the
     command takes and when the last sendMessage reached the fake; then stops the clusters.

The telegram queue keeps its default job timeout (30 s): start_broadcast must fit in it.

Goals (issue 15): fan-out < 20 s, first message < 5 s after Send, 30 msg/s, every process
< 200 MB, every page < 300 ms during sending, sending stopped < 5 s after the cancel.

    .venv/bin/python -m bench.million [--members 1000000] [--seconds 60]

Another benchmark runs the same measurement with `run_million(postgres_url, redis_url,
members=..., seconds=...)`, which returns the figures as a dict (the keys print_report reads).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from io import StringIO
from pathlib import Path
from typing import Any

from bench import backends
from bench.broadcast import fan_out_timed
from bench.fake_telegram_process import FakeTelegramProcess

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/bench_h_scale_million"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/6"
RATE = 30
PAGE_EVERY = 5.0
GOALS = {"fanout_s": 20, "first_message_s": 5, "rss_mb": 200, "page_ms": 300, "stopped_s": 5}
# After the cancel: sending counts as stopped once the fake has had no message for this long.
QUIET = 3.0

Result = dict[str, Any]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.measure:
        Path(args.result_file).write_text(json.dumps(measure(args)))
        return 0
    print_report(run_million(args.postgres_url, args.redis_url, args.members, args.seconds), args)
    return 0


def run_million(postgres_url: str, redis_url: str, members: int = 1_000_000, seconds: float = 60.0) -> Result:
    """The whole measurement on throwaway storage, in a process of its own: the figures
    print_report shows, as a dict."""
    flush = lambda: backends.flush_redis(redis_url)  # noqa: E731
    with backends.throwaway_storage("postgres", "bench-million-", postgres_url, flush) as folder:
        env = backends.backend_env("postgres", folder, postgres_url, redis_url, TELEGRAM_RATE_LIMIT=str(RATE))
        options = ["--members", str(members), "--seconds", str(seconds)]
        return backends.run_measurement("bench.million", "postgres", env, folder, options)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.million", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to watch the broadcast send")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL, help="a database named bench*; it is dropped")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL, help="a Redis database of its own; it is flushed")
    parser.add_argument("--measure", choices=["postgres"], help=argparse.SUPPRESS)
    parser.add_argument("--result-file", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.members < 1 or args.seconds <= 0:
        parser.error("--members and --seconds must be positive")
    return args


def print_report(r: Result, args: argparse.Namespace) -> None:
    def line(label: str, value: str, goal: str = "") -> None:
        print(f"{label:<58} {value:>12}  {goal}")

    print(f"\n{args.members:,} members on PostgreSQL + Redis, {os.cpu_count()} CPUs")
    line("members created (INSERT ... SELECT generate_series) (s)", f"{r['members_s']:.1f}")
    line("fan-out alone, batch by batch (s)", f"{r['fanout_s']:.1f}", f"goal < {GOALS['fanout_s']}")
    line("  its first batch (s)", f"{r['first_batch_s']:.2f}")
    line("deliveries table, pg_total_relation_size per 1M rows (MB)", f"{r['table_mb_per_million']:.0f}")
    line("Send -> first batch made, status sending (s)", f"{r['started_s']:.1f}")
    line("Send -> first message at the fake (s)", f"{r['first_message_s']:.1f}", f"goal < {GOALS['first_message_s']}")
    fanned_out = f"{r['fanned_out_s']:.1f}" if r["fanned_out_s"] is not None else "not yet"
    line("Send -> fan-out complete, while sending (s)", fanned_out, f"goal < {GOALS['fanout_s']}")
    line(f"sent in the {args.seconds:.0f} s after the first message (msg/s)", f"{r['rate']:.2f}", "goal 30")
    line("429s answered by the fake", str(r["rate_limited"]), "goal 0")
    line("cancel_broadcast: the command's time (s)", f"{r['cancel_command_s']:.1f}")
    stopped = f"goal < {GOALS['stopped_s']}; {r['sent_after_cancel']} sent after it"
    line("cancel_broadcast run -> last message at the fake (s)", f"{r['stopped_s']:.1f}", stopped)
    for name, times in r["pages"].items():
        if times:
            value = " / ".join(f"{ms:.0f}" for ms in page_times(times))
            line(f"{name}: median / p95 / max (ms, {len(times)} times)", value, f"goal < {GOALS['page_ms']}")
    print(f"peak RSS per process (MB), goal < {GOALS['rss_mb']}:")
    for command, mb in sorted(r["rss"], key=lambda x: -x[1]):
        print(f"  {mb:6.0f}  {command}")
    print(f"load average at the end: {r['load']}")


def page_times(times: list[float]) -> tuple[float, float, float]:
    """Median, p95 and max of a page's times."""
    p95 = statistics.quantiles(times, n=20, method="inclusive")[18] if len(times) > 1 else times[0]
    return statistics.median(times), p95, max(times)


# --- The child: settings from this process's environment -------------------------------------


def measure(args: argparse.Namespace) -> Result:
    import django

    django.setup()

    from django.conf import settings

    from bots.models import Bot
    from tests.fake_telegram import make_token

    static = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}
    settings.STORAGES = {**settings.STORAGES, "staticfiles": static}  # pages render without collectstatic
    result: Result = {}
    var_dir = Path(settings.VAR_DIR)
    with FakeTelegramProcess(var_dir, "--record", "counts") as fake:
        bot = Bot.objects.create(token=make_token(710001), api_base_url=fake.base_url)
        started = time.perf_counter()
        make_members(bot, args.members)
        result["members_s"] = time.perf_counter() - started
        print(f"  {args.members:,} members in {result['members_s']:.1f} s", flush=True)
        result.update(time_fan_out(bot, args.members))
        print(
            f"  fan-out {result['fanout_s']:.1f} s, its first batch {result['first_batch_s']:.2f} s, "
            f"{result['table_mb_per_million']:.0f} MB per million deliveries",
            flush=True,
        )
        fake.control.enforce_limits(per_second=RATE)
        result.update(send_and_watch(bot, var_dir, fake, args.seconds))
    result["load"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
    return result


def make_members(bot: Any, count: int) -> None:
    from django.db import connection

    from bots.models import TelegramUser

    table = connection.ops.quote_name(TelegramUser._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (bot_id, telegram_id, first_name, last_name, username, language_code,"
            " is_subscribed, is_blocked, first_seen, last_seen)"
            " SELECT %s, 10000000 + g, 'Member' || g, '', '', '', true, false, now(), now()"
            " FROM generate_series(1, %s) AS g",
            [bot.pk, count],
        )
        cursor.execute(f"ANALYZE {table}")


def time_fan_out(bot: Any, members: int) -> Result:
    from django.db import connection

    from broadcasts.models import Delivery

    broadcast, figures = fan_out_timed(bot, members)
    table = Delivery._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {table}")
        cursor.execute("SELECT pg_total_relation_size(%s)", [table])
        size = cursor.fetchone()[0]
        cursor.execute(f"TRUNCATE {table} CASCADE")
    broadcast.delete()
    return {**figures, "table_mb_per_million": size / 2**20 * 1_000_000 / members}


def send_and_watch(bot: Any, var_dir: Path, fake: FakeTelegramProcess, seconds: float) -> Result:
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.test import Client
    from django.urls import reverse

    from broadcasts.models import Broadcast
    from broadcasts.tasks import start_broadcast
    from tests.clusters import ClusterProcess

    env = {"TELEGRAM_RATE_LIMIT": str(RATE)}
    clusters = [ClusterProcess("telegram", var_dir, **env), ClusterProcess("broadcasts", var_dir, **env)]
    client = Client(HTTP_HOST="localhost")
    client.force_login(User.objects.create_superuser("bench", "bench@example.com", "a long bench password"))
    pages: dict[str, list[float]] = {"progress page": [], "progress JSON": [], "dashboard": [], "dashboard JSON": []}
    pages["broadcast_status"] = []
    out: Result = {}
    with backends.clusters_running(clusters):
        sampler = backends.RssSampler([c.process.pid for c in clusters] + [os.getpgid(0), fake.process.pid])
        broadcast = Broadcast.objects.create(bot=bot, text="Hello #first_name, thank you for your support!")
        urls = {
            "progress page": reverse("admin:broadcasts_broadcast_progress", args=[broadcast.pk]),
            "progress JSON": reverse("admin:broadcasts_broadcast_progress_json", args=[broadcast.pk]),
            "dashboard": reverse("queueing:dashboard"),
            "dashboard JSON": reverse("queueing:dashboard_json"),
        }
        sent_before = sends(fake)
        send = time.monotonic()
        start_broadcast.enqueue(broadcast.pk)
        started_s = first_s = None
        deadline = send + 600
        while first_s is None:
            now = time.monotonic()
            if started_s is None and Broadcast.objects.filter(pk=broadcast.pk, status="sending").exists():
                started_s = now - send
            if sends(fake) > sent_before:
                first_s = now - send
            if now > deadline:
                raise RuntimeError("no message within 600 s of Send")
            for cluster in clusters:
                if cluster.process.poll() is not None:
                    raise RuntimeError(f"qcluster {cluster.queue} exited:\n{cluster.log()[-3000:]}")
            time.sleep(0.05)
        out["started_s"] = started_s if started_s is not None else first_s
        out["first_message_s"] = first_s
        print(f"  Send -> sending {out['started_s']:.1f} s, -> first message {first_s:.1f} s", flush=True)
        first_count, first_at = sends(fake), time.monotonic()
        fanned_out_at = None

        def wait_noting_the_fan_out(seconds: float) -> None:
            nonlocal fanned_out_at
            until = time.monotonic() + seconds
            while time.monotonic() < until:
                if fanned_out_at is None and Broadcast.objects.filter(pk=broadcast.pk, fan_out_after=None).exists():
                    fanned_out_at = time.monotonic()
                time.sleep(0.1)

        while time.monotonic() - first_at < seconds:
            for name, page in urls.items():
                began = time.perf_counter()
                response = client.get(page)
                pages[name].append((time.perf_counter() - began) * 1000)
                if response.status_code != 200:
                    raise RuntimeError(f"{name}: HTTP {response.status_code}")
            began = time.perf_counter()
            call_command("broadcast_status", str(broadcast.pk), stdout=StringIO())
            pages["broadcast_status"].append((time.perf_counter() - began) * 1000)
            wait_noting_the_fan_out(PAGE_EVERY)
        out["rate"] = (sends(fake) - first_count) / (time.monotonic() - first_at)
        out["fanned_out_s"] = fanned_out_at - send if fanned_out_at is not None else None
        out["rate_limited"] = fake.control.rate_limited_count
        sampler.stop()
        out["rss"] = [(command, kb / 1024) for command, kb in sampler.peaks.values()]
        out["pages"] = pages
        print(f"  {out['rate']:.2f} msg/s, {out['rate_limited']} x 429", flush=True)
        out.update(cancel_and_watch(broadcast, fake))
        print(f"  cancel -> last message {out['stopped_s']:.1f} s", flush=True)
    return out


def cancel_and_watch(broadcast: Any, fake: FakeTelegramProcess) -> Result:
    """`cancel_broadcast ID` run here while the fake's count of messages is watched from a
    thread: when the last one arrived, counted from the moment the command was run."""
    from django.core.management import call_command

    last = {"count": sends(fake), "at": time.monotonic()}
    quiet = threading.Event()

    def watch() -> None:
        while not quiet.is_set():
            count, now = sends(fake), time.monotonic()
            if count != last["count"]:
                last.update(count=count, at=now)
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    before = last["count"]
    watcher.start()
    cancelled_at = time.monotonic()
    call_command("cancel_broadcast", str(broadcast.pk), stdout=StringIO(), stderr=StringIO())
    command_s = time.monotonic() - cancelled_at
    while time.monotonic() - max(last["at"], cancelled_at) < QUIET:
        time.sleep(0.1)
    quiet.set()
    watcher.join()
    return {
        "cancel_command_s": command_s,
        "stopped_s": max(0.0, last["at"] - cancelled_at),
        "sent_after_cancel": last["count"] - before,
    }


def sends(fake: FakeTelegramProcess) -> int:
    return fake.control.stats()["by_method"].get("sendmessage", 0)  # lower-cased by the fake


if __name__ == "__main__":
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    sys.exit(main())
