"""Replies and a broadcast at the same time, against a fake Telegram enforcing 30 messages a second.

For each backend -- the embedded default (SQLite in WAL mode + django-q2's ORM broker) and
PostgreSQL + Redis -- a real `telegram` cluster (its default 4 workers) answers --replies
`/start` updates from distinct new members (1,500), stored in the inbox at --rate per second
(25) as the webhook stores them (bots.inbox.accept_update, one INSERT), while a real
`broadcasts` cluster sends a broadcast to --members other members (2,000), all at the default
TELEGRAM_RATE_LIMIT=30 against the fake Telegram in a process of its own enforcing 30/s per
bot and 1/s per chat. It prints:

  429s          what the fake answered 429 from the first /start to the broadcast's end (goal 0);
  rate          messages the fake accepted per second while replies were being answered (the
                first to the last reply), and over the whole run;
  replies       stored in the inbox -> the fake received the reply: p50, p95, max;
  broadcast     its messages sent while replies were being answered, and in all (told from
                replies by their Stop button: a member whose /start subscribed them before the
                fan-out reached them gets both, which a note counts);
  notes         replies sent twice, with each such chat's calls, update and jobs.

Each backend runs in its own subprocess with its own environment on throwaway storage: a
/tmp/bench-replies-* folder (VAR_DIR; SQLite's database) and, for PostgreSQL + Redis, the
database bench_replies (dropped and recreated, dropped at the end) and Redis database 8
(flushed before and after; refused if another client is connected to it).

Run from the project folder (about 2.5 minutes per backend at the defaults):

    .venv/bin/python -m bench.replies [--backend sqlite|postgres|all] [--replies 1500] [--rate 25]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench import backends
from bench.broadcast import make_members
from bench.fake_telegram_process import FakeTelegramProcess

ROOT = Path(__file__).resolve().parent.parent
BACKENDS = {"sqlite": "sqlite+orm", "postgres": "postgres+redis"}
DEFAULT_POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/bench_replies"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/8"
FORBIDDEN_REDIS_DBS = {"9", "10"}  # the other benchmarks'
LIMIT = 30
FIRST_REPLIER = 30_000_000
WARMUP = 8

Result = dict[str, Any]


def main(argv: list[str] | None = None) -> int:
    return backends.run_backends(parse_args(argv), BACKENDS, measure, run_backend, print_table)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = backends.argument_parser("bench.replies", __doc__, BACKENDS)
    parser.add_argument("--replies", type=int, default=1500, help="/start updates from distinct new members")
    parser.add_argument("--rate", type=float, default=25, help="/start updates stored per second")
    parser.add_argument("--members", type=int, default=2000, help="members of the broadcast sent meanwhile")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL, help="a database named bench*; it is dropped")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL, help="a Redis database of its own; it is flushed")
    args = parser.parse_args(argv)
    if min(args.replies, args.members) < 1 or args.rate <= 0:
        parser.error("--replies and --members must be at least 1, --rate above 0")
    return args


def run_backend(name: str, args: argparse.Namespace) -> Result:
    with backends.throwaway_storage(
        name, f"bench-replies-{name}-", args.postgres_url, lambda: flush_redis(args.redis_url)
    ) as folder:
        options = ["--replies", str(args.replies), "--rate", str(args.rate), "--members", str(args.members)]
        env = backends.backend_env(name, folder, args.postgres_url, args.redis_url, TELEGRAM_RATE_LIMIT=str(LIMIT))
        return backends.run_measurement("bench.replies", name, env, folder, options)


def flush_redis(url: str) -> None:
    backends.flush_redis(url, FORBIDDEN_REDIS_DBS)


def print_table(results: list[Result], args: argparse.Namespace) -> None:
    rows: list[tuple[str, ...]] = [("", *(r["backend"] for r in results))]

    def row(label: str, key: str, spec: str) -> None:
        rows.append((label, *(format(r[key], spec) for r in results)))

    row("429s answered by the fake (goal 0)", "limited", "d")
    row("accepted msg/s while replies were answered", "rate_during", ".2f")
    row("accepted msg/s, first /start -> broadcast done", "rate_all", ".2f")
    row(f"{args.replies:,} replies: stored -> reply p50 (ms)", "p50_ms", ",.0f")
    row("  p95 (ms)", "p95_ms", ",.0f")
    row("  max (ms)", "max_ms", ",.0f")
    row("replies answered", "replied", "d")
    row("broadcast msgs sent while replies were answered", "broadcast_during", "d")
    row(f"broadcast msgs sent ({args.members:,} members + those subscribed first)", "broadcast_sent", "d")
    print()
    backends.print_aligned(rows, underline=True)
    print(
        f"\n{os.cpu_count()} CPUs; telegram cluster with {'/'.join(str(r['workers']) for r in results)} workers; "
        f"/start at {args.rate:g}/s; 1-min load average {os.getloadavg()[0]:.1f} at end."
    )
    backends.print_notes(results)


# --- The child: one backend, settings loaded from this process's environment ----------------


def measure(args: argparse.Namespace) -> Result:
    import django

    django.setup()

    from django.conf import settings

    from bots.models import Bot
    from broadcasts.models import Broadcast
    from broadcasts.tasks import start_broadcast
    from tests.clusters import ClusterProcess
    from tests.fake_telegram import make_token

    var_dir = Path(settings.VAR_DIR)
    notes: list[str] = []
    with FakeTelegramProcess(var_dir) as fake:
        bot = Bot.objects.create(token=make_token(700010), api_base_url=fake.base_url)
        make_members(bot, args.members)
        broadcast = Broadcast.objects.create(bot=bot, text="Hello #first_name, thank you for your support!")
        fake.control.enforce_limits(per_second=LIMIT)
        clusters = [ClusterProcess("telegram", var_dir), ClusterProcess("broadcasts", var_dir)]
        with backends.clusters_running(clusters):
            # Each worker initialises its telegram.Bot (getMe) on its first update.
            store_starts(bot, range(FIRST_REPLIER - WARMUP, FIRST_REPLIER), rate=args.rate)
            fake.control.wait_for_calls(WARMUP, method="sendMessage", timeout=60)
            limited_before = fake.control.rate_limited_count
            start_broadcast.enqueue(broadcast.pk)
            repliers = range(FIRST_REPLIER, FIRST_REPLIER + args.replies)
            stored = store_starts(bot, repliers, rate=args.rate)
            wait_until_done(broadcast, WARMUP + args.replies, clusters, timeout=120 + args.members / 10)
        calls = fake.control.calls("sendMessage")
        result = figures(calls, stored, set(repliers), notes)
        notes.extend(duplicate_evidence(calls, set(repliers), clusters))
        result["limited"] = fake.control.rate_limited_count - limited_before
    result.update(backend=BACKENDS[args.measure], workers=settings.QUEUES["telegram"]["workers"], notes=notes)
    print(
        f"  {result['limited']} x 429; {result['rate_during']:.2f} msg/s during replies; "
        f"reply p50 {result['p50_ms']:.0f} ms, p95 {result['p95_ms']:.0f} ms",
        flush=True,
    )
    return result


def store_starts(bot: Any, users: range, rate: float) -> dict[int, float]:
    """`/start` from each user into the inbox at `rate` per second, as the webhook stores it;
    returns user -> when it was stored."""
    from bench.webhook import update_body
    from bots.inbox import accept_update

    stored: dict[int, float] = {}
    start = time.monotonic()
    for i, user in enumerate(users):
        if (delay := start + i / rate - time.monotonic()) > 0:
            time.sleep(delay)
        accept_update(bot.pk, json.dumps(update_body(user, user_id=user)))
        stored[user] = time.time()
    return stored


def wait_until_done(broadcast: Any, updates: int, clusters: list[Any], timeout: float) -> None:
    """Until the broadcast is done and every update handled, asking the database: asking the
    fake for its calls costs it CPU, which delays the messages it is receiving meanwhile."""
    from bots.models import Update
    from broadcasts.models import Broadcast

    deadline = time.monotonic() + timeout
    while True:
        broadcast.refresh_from_db()
        handled = Update.objects.filter(status__in=[Update.Status.PROCESSED, Update.Status.FAILED]).count()
        if broadcast.status == Broadcast.Status.DONE and handled == updates:
            return
        for cluster in clusters:
            if cluster.process.poll() is not None:
                raise RuntimeError(f"qcluster {cluster.queue} exited:\n{cluster.log()[-3000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"not done in time: {handled} of {updates} updates, broadcast {broadcast.counts()}")
        time.sleep(1)


def figures(calls: list[Any], stored: dict[int, float], repliers: set[int], notes: list[str]) -> Result:
    """A replier can get the broadcast too: /start subscribes them, and the broadcast's fan-out
    takes in every member subscribed when it reaches them. Its message is told from a reply by
    its Stop button, so it is neither a reply nor counted as one sent twice."""
    accepted = sorted((c for c in calls if c.status == 200 and c.received_at >= min(stored.values())), key=_received)
    broadcast = [c for c in accepted if is_broadcast_message(c)]
    replies = [c for c in accepted if is_reply(c, repliers)]
    first_reply, last_reply = replies[0].received_at, replies[-1].received_at
    during = [c for c in accepted if first_reply <= c.received_at <= last_reply]
    latencies = sorted((c.received_at - stored[c.chat_id]) * 1000 for c in replies)
    if twice := len(replies) - len({c.chat_id for c in replies}):
        notes.append(f"{twice} replies sent twice")
    if repliers_in_broadcast := sum(1 for c in broadcast if c.chat_id in repliers):
        notes.append(f"{repliers_in_broadcast} repliers also got the broadcast (subscribed before its fan-out)")
    return {
        "rate_during": len(during) / max(last_reply - first_reply, 1e-6),
        "rate_all": len(accepted) / max(accepted[-1].received_at - min(stored.values()), 1e-6),
        "p50_ms": statistics.median(latencies),
        "p95_ms": statistics.quantiles(latencies, n=20, method="inclusive")[18] if len(latencies) > 1 else latencies[0],
        "max_ms": latencies[-1],
        "replied": len({c.chat_id for c in replies}),
        "broadcast_during": sum(1 for c in during if is_broadcast_message(c)),
        "broadcast_sent": len(broadcast),
    }


def is_reply(call: Any, repliers: set[int]) -> bool:
    return call.chat_id in repliers and not is_broadcast_message(call)


def is_broadcast_message(call: Any) -> bool:
    """A broadcast's message carries the Stop button (broadcasts.unsubscribe); a reply has none."""
    from broadcasts.unsubscribe import PREFIX

    keyboard = (call.params.get("reply_markup") or {}).get("inline_keyboard", [])
    return any(str(button.get("callback_data", "")).startswith(f"{PREFIX}:") for row in keyboard for button in row)


def duplicate_evidence(calls: list[Any], repliers: set[int], clusters: list[Any]) -> list[str]:
    """For each chat that was accepted two replies: the calls, its Update row, the jobs that
    took it on and the clusters' log lines that name them -- read before the throwaway storage goes."""
    from bots.models import Update
    from bots.tasks import handle_update
    from queueing.models import JobRecord

    by_chat: dict[int, list[Any]] = {}
    for call in calls:
        if call.status == 200 and is_reply(call, repliers):
            by_chat.setdefault(call.chat_id, []).append(call)
    lines = []
    for chat_id, twice in by_chat.items():
        if len(twice) < 2:
            continue
        lines.append(f"chat {chat_id} answered {len(twice)} times:")
        lines += [f"  call received {c.received_at:.3f} answered {c.answered_at:.3f} {c.params}" for c in twice]
        for update in Update.objects.filter(chat_id=chat_id):
            lines.append(
                f"  update pk {update.pk} id {update.update_id}: {update.status} attempts {update.attempts} "
                f"error {update.error!r} handling_since {update.handling_since} received {update.received_at} "
                f"processed {update.processed_at} job {update.job_id}"
            )
            records = JobRecord.objects.of_kinds(handle_update).with_first_arg(update.pk)
            for r in records:
                lines.append(
                    f"    job {r.pk} {r.status} attempts {r.attempts}/{r.max_attempts} {r.error_class!r} "
                    f"{r.last_error[:300]!r} worker {r.worker} enqueued {r.enqueued_at} dispatched {r.dispatched_at} "
                    f"started {r.started_at} finished {r.finished_at} retry_of {r.retry_of_id} task {r.task_id}"
                )
            named = [str(chat_id), *(f"Job {r.pk} " for r in records)]
            for cluster in clusters:
                lines += [
                    f"    log {cluster.queue}: {line}"
                    for line in cluster.log().splitlines()
                    if any(name in line for name in named)
                ]
    return lines


def _received(call: Any) -> float:
    return call.received_at


if __name__ == "__main__":
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    sys.exit(main())
