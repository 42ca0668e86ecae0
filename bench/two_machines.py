"""Two machines sending one bot's broadcast and its replies, and one of them dying midway.

Two sets of real clusters (`telegram` and `broadcasts`, as `manage.py qcluster` runs them),
each as a machine of its own would run them (tests.clusters.Machine: its own MACHINE_NAME and
VAR_DIR, with the media, downloads and Prometheus folders under it), against one PostgreSQL
and one Redis, and the fake Telegram in a process of its own enforcing 30 messages a second
per bot and 1 a second per chat. One broadcast goes to --members members (1,800: a minute at
30/s) while --replies new members (60) write `/start` at --rate a second (1), stored in the
inbox as the webhook stores them. --kill-after seconds after the broadcast's first message
(20), the machine whose worker is running the broadcast's job is killed: SIGKILL to every
process of its clusters at once, as a machine losing power. It prints:

  msg/s before the kill  messages the fake accepted (broadcast and replies) per second, from
                         the broadcast's first message to the kill (with --kill-after 0: to
                         the last message); the goal is 30;
  429s                   what the fake answered 429 (goal 0);
  duplicated             members who got the broadcast twice (goal 0), and replies sent twice;
  unknown / lost         deliveries shown `unknown` (may have arrived; never resent), and
                         members with neither a copy nor `unknown` (goal 0);
  survivor finished in   seconds from the kill to the broadcast `done` (the messages left at
                         the kill over 30/s at best), and its msg/s meanwhile;
  replies                answered, and failed with "stopped midway" (the dead machine's);
  peak RSS               of every process of one machine's clusters, summed.

PostgreSQL + Redis only: SQLite is one machine by nature. The database of --postgres-url
(bench_two_machines; dropped and recreated, dropped at the end) and the Redis database of
--redis-url (7; flushed before and after, refused if another client is connected to it).

Run from the project folder (about 2.5 minutes at the defaults):

    .venv/bin/python -m bench.two_machines [--members 1800] [--replies 60] [--rate 1] [--kill-after 20]

Another benchmark runs the same measurement with `run_two_machines(postgres_url, redis_url,
members=..., ...)`, which returns the figures as a dict (the keys print_table reads).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench import backends
from bench.broadcast import make_members
from bench.fake_telegram_process import FakeTelegramProcess

ROOT = Path(__file__).resolve().parent.parent
BACKENDS = {"postgres": "postgres+redis"}
DEFAULT_POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/bench_two_machines"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/7"
FORBIDDEN_REDIS_DBS = {"6", "8", "9", "10"}  # the other benchmarks'
LIMIT = 30
FIRST_MEMBER = 10_000_000
FIRST_WRITER = 40_000_000
TEXT = "Hello #first_name, thank you for your support!"

Result = dict[str, Any]


def main(argv: list[str] | None = None) -> int:
    return backends.run_backends(parse_args(argv), BACKENDS, measure, run_backend, print_table)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = backends.argument_parser("bench.two_machines", __doc__, BACKENDS)
    parser.add_argument("--members", type=int, default=1800, help="members of the broadcast")
    parser.add_argument("--replies", type=int, default=60, help="new members writing /start during the broadcast")
    parser.add_argument("--rate", type=float, default=1, help="/start updates stored per second")
    parser.add_argument("--kill-after", type=float, default=20, help="seconds after the first message; 0: no kill")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL, help="a database named bench*; it is dropped")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL, help="a Redis database of its own; it is flushed")
    args = parser.parse_args(argv)
    if args.members < LIMIT or args.replies < 0 or args.rate <= 0 or args.kill_after < 0:
        parser.error(f"--members at least {LIMIT}, --replies and --kill-after at least 0, --rate above 0")
    return args


def options(members: int, replies: int, rate: float, kill_after: float) -> list[str]:
    return ["--members", str(members), "--replies", str(replies), "--rate", str(rate), "--kill-after", str(kill_after)]


def run_backend(name: str, args: argparse.Namespace) -> Result:
    return run_two_machines(args.postgres_url, args.redis_url, args.members, args.replies, args.rate, args.kill_after)


def run_two_machines(
    postgres_url: str,
    redis_url: str,
    members: int = 1800,
    replies: int = 60,
    rate: float = 1,
    kill_after: float = 20,
    **env: str,
) -> Result:
    """The whole measurement on throwaway storage, in a process of its own; `env` adds
    settings for every process (e.g. TELEGRAM_RATE_LIMIT)."""
    flush = lambda: backends.flush_redis(redis_url, FORBIDDEN_REDIS_DBS)  # noqa: E731
    with backends.throwaway_storage("postgres", "bench-two-machines-", postgres_url, flush) as folder:
        env = backends.backend_env(
            "postgres", folder, postgres_url, redis_url, **{"TELEGRAM_RATE_LIMIT": str(LIMIT), **env}
        )
        arguments = options(members, replies, rate, kill_after)
        return backends.run_measurement("bench.two_machines", "postgres", env, folder, arguments)


def print_table(results: list[Result], args: argparse.Namespace) -> None:
    rows: list[tuple[str, ...]] = [("", *(r["backend"] for r in results))]

    def row(label: str, key: str, spec: str) -> None:
        rows.append((label, *(format(r[key], spec) if r[key] is not None else "-" for r in results)))

    row("accepted msg/s, first message -> kill or end (goal 30)", "rate_before", ".2f")
    row("429s answered by the fake (goal 0)", "limited", "d")
    row(f"members of {args.members:,} who got the broadcast twice", "duplicated", "d")
    row("  shown unknown (may have arrived)", "unknown", "d")
    row("  lost (neither a copy nor unknown)", "lost", "d")
    row("broadcast messages left at the kill", "left_at_kill", ",d")
    row(f"survivor finished, s after the kill (left / {LIMIT} at best)", "finished_after_kill_s", ".1f")
    row("  broadcast msg/s meanwhile", "rate_after", ".2f")
    row(f"replies answered of {args.replies}", "replied", "d")
    row("  failed with their machine", "replies_failed", "d")
    row("  sent twice", "replies_twice", "d")
    row("peak RSS of a machine's clusters, summed (MB)", "peak_machine_rss_mb", ".0f")
    print()
    backends.print_aligned(rows, underline=True)
    print(
        f"\n{os.cpu_count()} CPUs; two machines of {results[0]['workers']} telegram and "
        f"{results[0]['broadcast_workers']} broadcasts workers each; /start at {args.rate:g}/s; "
        f"1-min load average {os.getloadavg()[0]:.1f} at end."
    )
    backends.print_notes(results)


# --- The child: settings loaded from this process's environment ------------------------------


def measure(args: argparse.Namespace) -> Result:
    import django

    django.setup()

    from django.conf import settings

    result = measure_two_machines(Path(settings.VAR_DIR), args.members, args.replies, args.rate, args.kill_after)
    result.update(
        backend=BACKENDS[args.measure],
        workers=settings.QUEUES["telegram"]["workers"],
        broadcast_workers=settings.QUEUES["broadcasts"]["workers"],
    )
    return result


def measure_two_machines(var_dir: Path, members: int, replies: int, rate: float, kill_after: float) -> Result:
    """In a process with Django set up on PostgreSQL + Redis: the measurement the module's
    docstring describes, its figures as a dict."""
    from django.core.management import call_command

    from bots.models import Bot, Update
    from broadcasts.models import Broadcast
    from tests.clusters import Machine, machine_running
    from tests.fake_telegram import make_token

    notes: list[str] = []
    with FakeTelegramProcess(var_dir) as fake:
        bot = Bot.objects.create(token=make_token(700020), api_base_url=fake.base_url)
        make_members(bot, members, first_id=FIRST_MEMBER)
        fake.control.enforce_limits(per_second=LIMIT)
        machines = [Machine(name, var_dir / name) for name in ("machine-a", "machine-b")]
        clusters = [cluster for machine in machines for cluster in machine.clusters]
        with backends.clusters_running(clusters):
            samplers = {m.name: backends.RssSampler([c.process.pid for c in m.clusters]) for m in machines}
            send = ["send_broadcast", "--text", TEXT, "--yes", "--bot", str(bot.telegram_id)]
            call_command(*send, stdout=io.StringIO(), stderr=io.StringIO())
            broadcast = Broadcast.objects.get(bot=bot)
            fake.control.wait_for_calls(1, method="sendMessage", timeout=60)
            first = time.time()
            writers = range(FIRST_WRITER, FIRST_WRITER + replies)
            writing = threading.Thread(target=_write, args=(bot, writers, rate), daemon=True)
            writing.start()
            killed_at = killed = None
            if kill_after:
                time.sleep(max(0.0, first + kill_after - time.time()))
                dying = _wait_for(lambda: machine_running(machines, "broadcasts"), 60, "a machine sending")
                dying.kill()
                killed_at, killed = time.time(), time.monotonic()
                samplers.pop(dying.name).stop()
                notes.append(f"killed {dying.name} {killed_at - first:.1f} s after the first message")
            done = _wait_for(lambda: _done(broadcast, Broadcast), 600 + members / 10, "the broadcast to finish")
            writing.join()
            _wait_for(lambda: _updates_ended(Update, replies), 120, "every update to end")
            peak = max(s.peak_group for s in samplers.values()) / 1024
            for sampler in samplers.values():
                sampler.stop()
        every_call = fake.control.calls("sendMessage")
        calls = [c for c in every_call if c.status == 200]
        limited = fake.control.rate_limited_count
        if killed_at and (refused := [c.received_at - killed_at for c in every_call if c.status == 429]):
            notes.append(f"429s at {', '.join(f'{t:+.1f}' for t in refused)} s from the kill")
    result = figures(broadcast, calls, first, killed_at, set(writers), notes)
    failed = Update.objects.filter(status=Update.Status.FAILED).count()
    result.update(
        limited=limited,
        finished_after_kill_s=done - killed if killed else None,
        replies_failed=failed,
        peak_machine_rss_mb=peak,
        notes=notes,
    )
    survivor = f"finished {done - killed:.1f} s after the kill" if killed else "no kill"
    print(
        f"  {result['rate_before']:.2f} msg/s, {limited} x 429, {result['duplicated']} duplicated, "
        f"{result['unknown']} unknown; {survivor}",
        flush=True,
    )
    return result


def _write(bot: Any, users: range, rate: float) -> None:
    from django.db import connection

    from bench.replies import store_starts

    try:
        store_starts(bot, users, rate)
    finally:
        connection.close()


def _wait_for(condition: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.5)
    return value


def _done(broadcast: Any, model: Any) -> float | None:
    """time.monotonic() once the broadcast is done."""
    broadcast.refresh_from_db()
    return time.monotonic() if broadcast.status == model.Status.DONE else None


def _updates_ended(update_model: Any, replies: int) -> bool:
    ended = update_model.objects.filter(status__in=[update_model.Status.PROCESSED, update_model.Status.FAILED])
    return ended.count() >= replies


def figures(
    broadcast: Any, calls: list[Any], first: float, killed_at: float | None, writers: set[int], notes
) -> Result:
    from broadcasts.models import Delivery

    members = set(broadcast.deliveries.values_list("chat_id", flat=True))
    copies = Counter(c.chat_id for c in calls if c.chat_id in members)
    unknown = set(broadcast.deliveries.filter(status=Delivery.Status.UNKNOWN).values_list("chat_id", flat=True))
    answered = Counter(c.chat_id for c in calls if c.chat_id in writers)
    end = killed_at or max(c.received_at for c in calls)
    before = [c for c in calls if first <= c.received_at <= end]
    after = [c for c in calls if killed_at and c.received_at > killed_at and c.chat_id in members]
    last = max((c.received_at for c in after), default=killed_at or end)
    sent_never_got = broadcast.deliveries.filter(status=Delivery.Status.SENT).exclude(chat_id__in=list(copies)).count()
    if sent_never_got:
        notes.append(f"{sent_never_got} deliveries `sent` that the fake never accepted")
    return {
        "rate_before": len(before) / max(end - first, 1e-6),
        "duplicated": sum(1 for n in copies.values() if n > 1),
        "unknown": len(unknown),
        "lost": len(members - set(copies) - unknown),
        "left_at_kill": len(members) - sum(1 for c in before if c.chat_id in members) if killed_at else None,
        "rate_after": len(after) / max(last - killed_at, 1e-6) if killed_at else None,
        "replied": len(answered),
        "replies_twice": sum(1 for n in answered.values() if n > 1),
    }


if __name__ == "__main__":
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    sys.exit(main())
