"""CPU time per message of one broadcast sender (broadcasts.tasks.send_deliveries), and of the
fake Telegram and PostgreSQL serving it: a paid broadcast at 1000/s and a free one at 30/s.

One `send_deliveries` job runs in the measuring process, against the fake Telegram in a process
of its own enforcing Telegram's limits (30/s per bot, 1000/s paid), on PostgreSQL + Redis. CPU
time (user + system, every thread) is read from /proc before and after the job, so the figures
do not depend on what else the machine runs: the sender's process, the fake's, and PostgreSQL's
backends serving the benchmark's database. With --py-spy PATH, py-spy samples the sender's
threads during each job (CPU only, not idle) and the heaviest frames are printed.

    .venv/bin/python -m bench.sender_cpu [--paid-members 10000] [--free-members 600] [--py-spy /path/py-spy]

PostgreSQL database bench_sender_cpu (dropped and recreated) and Redis database 8 (flushed)
by default; --postgres-url / --redis-url to change them.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import backends
from bench.fake_telegram_process import FakeTelegramProcess

ROOT = Path(__file__).resolve().parent.parent
LABELS = {"postgres": "postgres+redis"}
PAID_RATE, FREE_RATE = 1000, 30

Result = dict[str, Any]


def main(argv: list[str] | None = None) -> int:
    return backends.run_backends(parse_args(argv), LABELS, measure, run_backend, print_table)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = backends.argument_parser("bench.sender_cpu", __doc__, LABELS)
    parser.add_argument("--paid-members", type=int, default=10_000, help="members of the paid broadcast (0: skip)")
    parser.add_argument("--free-members", type=int, default=600, help="members of the 30/s broadcast (0: skip)")
    parser.add_argument("--py-spy", default="", help="py-spy's executable: sample the sender's CPU")
    parser.add_argument("--postgres-url", default="postgres://postgres@127.0.0.1:5432/bench_sender_cpu")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/8")
    return parser.parse_args(argv)


def run_backend(name: str, args: argparse.Namespace) -> Result:
    with backends.throwaway_storage(
        name, "bench-sender-cpu-", args.postgres_url, lambda: backends.flush_redis(args.redis_url)
    ) as folder:
        env = backends.backend_env(name, folder, args.postgres_url, args.redis_url)
        options = ["--paid-members", str(args.paid_members), "--free-members", str(args.free_members)]
        if args.py_spy:
            options += ["--py-spy", args.py_spy]
        return backends.run_measurement("bench.sender_cpu", name, env, folder, options)


def print_table(results: list[Result], args: argparse.Namespace) -> None:
    for result in results:
        for case in result["cases"]:
            cpu = case["cpu_ms"]
            parts = ", ".join(f"{name} {ms:.3f}" for name, ms in cpu.items())
            print(
                f"{case['name']}: {case['sent']} sent at {case['per_s']:.1f} msg/s, {case['limited']} x 429; "
                f"CPU ms per message: {parts}"
            )
            print("  the sender's threads: " + ", ".join(f"{k} {v:.3f}" for k, v in case["sender_threads_ms"].items()))
    print(f"{os.cpu_count()} CPUs; 1-min load average {os.getloadavg()[0]:.1f} at end.")
    backends.print_notes(results)


def measure(args: argparse.Namespace) -> Result:
    import django

    django.setup()
    from django.conf import settings

    from bench.broadcast import make_members
    from bots.models import Bot
    from tests.fake_telegram import make_token

    var_dir = Path(settings.VAR_DIR)
    database = settings.DATABASES["default"]["NAME"]
    cases, notes = [], []
    with FakeTelegramProcess(var_dir, "--record", "counts") as fake:
        fake.control.enforce_limits(per_second=FREE_RATE, paid_per_second=PAID_RATE)
        for name, members, paid in (
            (f"paid at {PAID_RATE}/s", args.paid_members, True),
            (f"free at {FREE_RATE}/s", args.free_members, False),
        ):
            if not members:
                continue
            bot = Bot.objects.create(token=make_token(730001 + len(cases)), api_base_url=fake.base_url)
            make_members(bot, members)
            cases.append(one_sender(name, bot, paid, fake, database, args.py_spy, notes))
    return {"backend": LABELS[args.measure], "cases": cases, "notes": notes}


def one_sender(name: str, bot: Any, paid: bool, fake: Any, database: str, py_spy: str, notes: list[str]) -> Result:
    from django.db import transaction
    from django.db.models import Max, Min
    from django.utils import timezone

    from broadcasts.models import Broadcast, Delivery
    from broadcasts.sending import fan_out
    from broadcasts.tasks import send_deliveries

    broadcast = Broadcast.objects.create(
        bot=bot,
        text="Hello #first_name, thank you for your support!",
        status=Broadcast.Status.SENDING,
        started_at=timezone.now(),
        allow_paid_broadcast=paid,
    )
    with transaction.atomic():
        while fan_out(broadcast) and broadcast.fan_out_after is not None:
            pass
    limited_before = fake.control.rate_limited_count
    groups = {"sender": [os.getpgid(0)], "fake Telegram": [fake.process.pid]}
    before = {part: backends.cpu_seconds(pgids) for part, pgids in groups.items()}
    before["PostgreSQL"] = backends.cpu_seconds(database=database)
    own_before, loop_before = _own_cpu(), time.thread_time()
    sampler = _start_py_spy(py_spy, name)
    with _phases_timed() as phases:
        send_deliveries(broadcast.pk)
    samples = _stop_py_spy(sampler)
    own, loop_cpu = _own_cpu() - own_before, time.thread_time() - loop_before
    cpu = {part: backends.cpu_seconds(pgids) - before[part] for part, pgids in groups.items()}
    cpu["PostgreSQL"] = backends.cpu_seconds(database=database) - before["PostgreSQL"]
    cpu["sender"] = own  # this process alone (its group holds the parent benchmark too)
    sent = Delivery.objects.filter(broadcast=broadcast, status=Delivery.Status.SENT)
    bounds = sent.aggregate(first=Min("sent_at"), last=Max("sent_at"))
    count = sent.count()
    if count != broadcast.deliveries.count():
        notes.append(f"{name}: {broadcast.counts()}")
    case = {
        "name": name,
        "sent": count,
        "per_s": count / max((bounds["last"] - bounds["first"]).total_seconds(), 1e-6),
        "limited": fake.control.rate_limited_count - limited_before,
        "cpu_ms": {part: 1000 * seconds / max(count, 1) for part, seconds in cpu.items()},
        "sender_threads_ms": {
            "event loop": 1000 * loop_cpu / max(count, 1),
            **{
                f"{phase} ({calls} calls)": 1000 * seconds / max(count, 1) for phase, (calls, seconds) in phases.items()
            },
        },
    }
    print(f"  {name}: {case}", flush=True)
    if samples:
        _print_profile(name, samples)
    return case


@contextlib.contextmanager
def _phases_timed():
    """The CPU time of each call the sender makes in its database thread, and of the
    departure log's calls in their thread, by function: name -> (calls, seconds)."""
    from broadcasts.sending import BroadcastSender, Departures

    phases: dict[str, list] = collections.defaultdict(lambda: [0, 0.0])

    def timed(func, name):
        def call(*args):
            started = time.thread_time()
            try:
                return func(*args)
            finally:
                phases[name][0] += 1
                phases[name][1] += time.thread_time() - started

        return call

    in_db, in_thread = BroadcastSender._in_db, Departures._in_thread

    async def timed_in_db(self, func, *args):
        return await in_db(self, timed(func, func.__name__), *args)

    async def timed_in_thread(self, func, *args):
        return await in_thread(self, timed(func, f"departure log: {func.__name__}"), *args)

    BroadcastSender._in_db, Departures._in_thread = timed_in_db, timed_in_thread
    try:
        yield phases
    finally:
        BroadcastSender._in_db, Departures._in_thread = in_db, in_thread


def _own_cpu() -> float:
    times = os.times()
    return times.user + times.system


def _start_py_spy(py_spy: str, name: str) -> tuple[subprocess.Popen, Path] | None:
    if not py_spy:
        return None
    out = Path(tempfile.gettempdir()) / f"py-spy-sender-{name.split()[0]}.txt"
    print(f"  py-spy's samples: {out}", flush=True)
    command = [
        py_spy,
        "record",
        "--pid",
        str(os.getpid()),
        "--nonblocking",
        "--gil",
        "--threads",
        "--format",
        "raw",
        "--rate",
        "250",
    ]
    process = subprocess.Popen(
        [*command, "--rate", "250", "-o", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.0)  # attached
    return process, out


def _stop_py_spy(sampler: tuple[subprocess.Popen, Path] | None) -> list[tuple[list[str], int]]:
    if sampler is None:
        return []
    process, out = sampler
    process.send_signal(signal.SIGINT)
    process.wait(30)
    samples = []
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if count.isdigit():
            samples.append((stack.split(";"), int(count)))
    return samples


# Innermost frames of a thread that waits (py-spy cannot tell them idle here).
IDLE = (
    "EpollSelector.select ",
    "_worker (concurrent/futures/thread.py:81)",
    "Connection.wait (psycopg/",
    "_read_from_socket ",
)


def _print_profile(name: str, samples: list[tuple[list[str], int]], top: int = 45) -> None:
    """The frames with the most CPU samples, waits left out: own (the innermost frame) and inclusive."""
    samples = [(frames, count) for frames, count in samples if not frames[-1].startswith(IDLE)]
    total = sum(count for _, count in samples)
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    for frames, count in samples:
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    print(f"  py-spy, {name}: {total} samples")
    print("   own %  frame")
    for frame, count in own.most_common(top):
        print(f"  {100 * count / total:6.1f}  {frame}")
    print("  incl %  frame")
    for frame, count in inclusive.most_common(top * 2):
        print(f"  {100 * count / total:6.1f}  {frame}")


if __name__ == "__main__":
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    sys.exit(main())
