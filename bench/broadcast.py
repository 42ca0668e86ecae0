"""Broadcast sending: fan-out time, top speed with the limit lifted, pacing at 30/s, worker memory.

For each backend -- the embedded default (SQLite in WAL mode + django-q2's ORM broker) and
PostgreSQL + Redis -- it measures:

  fan-out       seconds for the whole fan-out (a first batch of FIRST_BATCH members, then
                `fan_out_more` until complete: one INSERT ... SELECT of FAN_OUT_BATCH members
                per transaction, as start_broadcast makes it) over
                --fanout-members subscribed members (100,000 by default, made with bulk_create
                beforehand), and for its first batch (what the sender waits for);
  one process   one `send_deliveries` job (1,000 deliveries) run in this process, no cluster, with
                TELEGRAM_RATE_LIMIT=100000: what one process achieves;
  top speed     a real broadcast to --members members (20,000 by default), enqueued as the admin
                does (`start_broadcast.enqueue`), run by real `telegram` and `broadcasts` clusters
                (the broadcasts queue's default 2 workers) with TELEGRAM_RATE_LIMIT=100000, against
                a zero-latency fake Telegram in a process of its own (`--record counts`). Rates:
                deliveries / (last sent_at - first sent_at), and deliveries / (enqueue -> finished_at);
  memory        peak VmRSS of the broadcasts cluster's processes (its process group, sampled every
                0.5 s) during the top-speed run: the largest single process and the group's sum;
  30/s pacing   (not with --skip-slow) a broadcast to --slow-members members (3,000: ~100 s) at the
                default TELEGRAM_RATE_LIMIT=30, the fake enforcing 30/s per bot: achieved rate,
                its ratio to 30, and the 429s the fake answered.

With --paid it measures only this instead:

  (--bots N instead: N bots, each broadcasting to --bot-members members (1,500: ~50 s) at its
  own 30/s at the same time, a broadcasts cluster of N workers, the fake enforcing 30/s per
  bot: each bot's msg/s and 429s, the total msg/s over the first to the last send, and the CPU
  time per message sent of each part -- the clusters, the fake, PostgreSQL's backends -- which
  does not depend on what else the machine runs.)

  paid          a paid broadcast (allow_paid_broadcast) to --paid-members members (30,000: ~30 s)
                at TELEGRAM_PAID_RATE_LIMIT=1000 through real clusters, the fake enforcing 1000/s
                for paid sends and 30/s for the others: achieved rate over sent_at, its ratio to
                1000, the 429s, the broadcasts cluster's peak RSS, and the CPU time per message
                sent of each part, as with --bots.

Delivery.sent_at is stamped per message as Telegram's answer arrives (BroadcastSender._send_one), so
rates from sent_at are accurate to the answer's latency (about a millisecond against the fake).

Each backend runs in its own subprocess with its own environment on throwaway storage: a
/tmp/bench-bc-* folder (VAR_DIR; SQLite's database) and, for PostgreSQL + Redis, the database
bench_broadcast (dropped and recreated, dropped at the end) and Redis database 8 (flushed before
and after; refused if another client is connected to it).

Run from the project folder (about 3 minutes per backend at the defaults, 1.5 with --skip-slow):

    .venv/bin/python -m bench.broadcast [--backend sqlite|postgres|all] [--members 20000] [--skip-slow]
    .venv/bin/python -m bench.broadcast --paid --backend postgres [--paid-members 30000] [--profile]
    .venv/bin/python -m bench.broadcast --bots 10 --backend postgres [--bot-members 1500]

Another benchmark runs the --bots measurement with `run_many_bots(postgres_url, redis_url,
bots=..., members=...)`, which returns its figures as a dict.
"""

from __future__ import annotations

import argparse
import cProfile
import itertools
import os
import pstats
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench import backends
from bench.fake_telegram_process import FakeTelegramProcess

ROOT = Path(__file__).resolve().parent.parent
BACKENDS = {"sqlite": "sqlite+orm", "postgres": "postgres+redis"}
DEFAULT_POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/bench_broadcast"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/8"
FORBIDDEN_REDIS_DBS = {"9", "10"}  # the other benchmarks'
LIFTED = "100000"
SLOW_RATE = 30
PAID_RATE = 1000

Result = dict[str, Any]


# --- The parent: one throwaway environment and one subprocess per backend -------------------


def main(argv: list[str] | None = None) -> int:
    return backends.run_backends(parse_args(argv), BACKENDS, measure, run_backend, print_table)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = backends.argument_parser("bench.broadcast", __doc__, BACKENDS)
    parser.add_argument("--members", type=int, default=20_000, help="members of the top-speed broadcast")
    parser.add_argument("--fanout-members", type=int, default=100_000, help="members for the fan-out timing")
    parser.add_argument("--slow-members", type=int, default=3000, help="members of the 30/s broadcast")
    parser.add_argument("--skip-slow", action="store_true", help="skip the ~100 s broadcast at 30/s")
    parser.add_argument("--paid", action="store_true", help="measure only a paid broadcast at 1000/s")
    parser.add_argument("--paid-members", type=int, default=30_000, help="members of the paid broadcast")
    parser.add_argument("--bots", type=int, default=0, help="measure only N bots broadcasting at once")
    parser.add_argument("--bot-members", type=int, default=1500, help="members of each bot with --bots")
    parser.add_argument(
        "--profile", action="store_true", help="with --paid: first a paid send_deliveries of 1,000 here, under cProfile"
    )
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL, help="a database named bench*; it is dropped")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL, help="a Redis database of its own; it is flushed")
    args = parser.parse_args(argv)
    if min(args.members, args.fanout_members, args.slow_members, args.paid_members) < 1:
        parser.error("member counts must be at least 1")
    return args


def run_backend(name: str, args: argparse.Namespace) -> Result:
    with backends.throwaway_storage(
        name, f"bench-bc-{name}-", args.postgres_url, lambda: flush_redis(args.redis_url)
    ) as folder:
        options = [
            *("--members", str(args.members), "--fanout-members", str(args.fanout_members)),
            *("--slow-members", str(args.slow_members)),
            *(["--skip-slow"] if args.skip_slow else []),
            *(["--paid", "--paid-members", str(args.paid_members)] if args.paid else []),
            *(["--profile"] if args.profile else []),
            *(["--bots", str(args.bots), "--bot-members", str(args.bot_members)] if args.bots else []),
        ]
        return backends.run_measurement("bench.broadcast", name, backend_env(name, folder, args), folder, options)


def run_many_bots(postgres_url: str, redis_url: str, bots: int = 10, members: int = 1500) -> Result:
    """`--bots N --backend postgres` on throwaway storage, in a process of its own: the figures
    print_table shows (bots_total_per_s, bots_each, bots_cpu_ms, ...), as a dict."""
    options = ["--bots", str(bots), "--bot-members", str(members)]
    return run_backend("postgres", parse_args([*options, "--postgres-url", postgres_url, "--redis-url", redis_url]))


def backend_env(name: str, var_dir: Path, args: argparse.Namespace) -> dict[str, str]:
    return backends.backend_env(name, var_dir, args.postgres_url, args.redis_url, TELEGRAM_RATE_LIMIT=LIFTED)


def flush_redis(url: str) -> None:
    backends.flush_redis(url, FORBIDDEN_REDIS_DBS)


def print_table(results: list[Result], args: argparse.Namespace) -> None:
    def fmt(value: Any, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    rows: list[tuple[str, ...]] = [("", *(r["backend"] for r in results))]

    def row(label: str, key: str, spec: str) -> None:
        rows.append((label, *(fmt(r.get(key), spec) for r in results)))

    if args.bots:
        row(f"{args.bots} bots at 30/s each: total msg/s", "bots_total_per_s", ".1f")
        row(f"  ratio to {args.bots * SLOW_RATE}/s (goal >= 0.98)", "bots_ratio", ".3f")
        row("  slowest bot (msg/s)", "bots_slowest_per_s", ".2f")
        row("  429s, all bots (goal 0)", "bots_429", "d")
        print_rows(rows, results)
        for r in results:
            print("  per bot (msg/s, 429s): " + ", ".join(f"{rate:.2f}/{n}" for rate, n in r["bots_each"]))
            print_cpu(r["bots_cpu_ms"])
        return
    if args.paid:
        row(f"paid, limit {PAID_RATE}/s: {args.paid_members:,} msgs, achieved (msg/s)", "paid_per_s", ",.0f")
        row(f"  ratio to {PAID_RATE}/s (goal >= 0.95)", "paid_ratio", ".3f")
        row("  429s answered by the fake (goal 0)", "paid_429", "d")
        row("  wall time enqueue -> done (s)", "paid_wall_s", ".1f")
        row("  peak RSS, largest cluster process (MB)", "peak_rss_mb", ".0f")
        print_rows(rows, results)
        for r in results:
            print_cpu(r["paid_cpu_ms"])
        return
    row(f"fan-out of {args.fanout_members:,} deliveries, batch by batch (s)", "fanout_s", ".2f")
    row("its first batch (s)", "first_batch_s", ".3f")
    row("one send_deliveries in-process, no cluster (msg/s)", "inprocess_per_s", ",.0f")
    row(f"cluster, limit lifted: {args.members:,} msgs, sent_at span (msg/s)", "top_per_s", ",.0f")
    row("  same, wall: enqueue -> done (msg/s)", "top_wall_per_s", ",.0f")
    row("  wall time enqueue -> done (s)", "top_wall_s", ".1f")
    row("  peak RSS, largest cluster process (MB)", "peak_rss_mb", ".0f")
    row("  peak RSS, whole broadcasts cluster (MB)", "peak_group_rss_mb", ".0f")
    if not args.skip_slow:
        row(f"limit {SLOW_RATE}/s: {args.slow_members:,} msgs, achieved (msg/s)", "slow_per_s", ".2f")
        row(f"  ratio to {SLOW_RATE}/s (goal >= 0.98)", "slow_ratio", ".3f")
        row("  429s answered by the fake (goal 0)", "slow_429", "d")
    print_rows(rows, results)
    print("Goals: >= 1,000 msg/s with the limit lifted, >= 29.4 msg/s at 30/s with no 429, < 200 MB per worker.")


def print_cpu(cpu: dict[str, float]) -> None:
    parts = ", ".join(f"{name} {ms:.2f}" for name, ms in cpu.items())
    print(f"  CPU ms per message sent: {sum(cpu.values()):.2f} ({parts})")


def print_rows(rows: list[tuple[str, ...]], results: list[Result]) -> None:
    print()
    backends.print_aligned(rows, underline=True)
    print(
        f"\n{os.cpu_count()} CPUs; broadcasts cluster with {'/'.join(str(r['workers']) for r in results)} workers; "
        f"1-min load average {os.getloadavg()[0]:.1f} at end."
    )
    backends.print_notes(results)


# --- The child: one backend, settings loaded from this process's environment ----------------


def measure(args: argparse.Namespace) -> Result:
    import django

    django.setup()

    from django.conf import settings

    from bots.models import Bot
    from tests.fake_telegram import make_token

    notes: list[str] = []
    result: Result = {"backend": BACKENDS[args.measure], "workers": settings.QUEUES["broadcasts"]["workers"]}
    var_dir = Path(settings.VAR_DIR)
    if args.bots:
        result.update(many_bots(var_dir, args.bots, args.bot_members, notes), workers=args.bots)
        result["notes"] = notes
        return result
    if args.paid:
        result.update(paid_broadcast(var_dir, args.paid_members, notes, args.profile))
        result["notes"] = notes
        return result

    # (a) fan-out
    fan_bot = Bot.objects.create(token=make_token(700001))
    make_members(fan_bot, args.fanout_members)
    result.update(time_fan_out(fan_bot))
    print(f"  fan-out of {args.fanout_members:,}: {result['fanout_s']:.2f} s", flush=True)
    print(f"  its first batch: {result['first_batch_s']:.3f} s", flush=True)

    with ExitStack() as stack:
        fake = stack.enter_context(FakeTelegramProcess(var_dir, "--record", "counts"))
        print(f"  fake Telegram at {fake.base_url}", flush=True)

        # (b1) one send_deliveries in this process
        solo_bot = Bot.objects.create(token=make_token(700002), api_base_url=fake.base_url)
        make_members(solo_bot, 1000)
        result["inprocess_per_s"] = in_process_sender(solo_bot, notes)
        print(f"  one send_deliveries in-process: {result['inprocess_per_s']:,.0f} msg/s", flush=True)

        # (b2) a real broadcast through real clusters, the limit lifted
        top_bot = Bot.objects.create(token=make_token(700003), api_base_url=fake.base_url)
        make_members(top_bot, args.members)
        result.update(cluster_broadcast(top_bot, var_dir, {"TELEGRAM_RATE_LIMIT": LIFTED}, args.members, notes))
        span = result.pop("span_s")
        result["top_per_s"], result["top_wall_s"] = result.pop("sent") / span, result.pop("wall_s")
        result["top_wall_per_s"] = args.members / result["top_wall_s"]
        print(
            f"  cluster, limit lifted: {result['top_per_s']:,.0f} msg/s over sent_at, "
            f"{result['top_wall_per_s']:,.0f} msg/s wall ({result['top_wall_s']:.1f} s); "
            f"peak RSS {result['peak_rss_mb']:.0f} MB (cluster {result['peak_group_rss_mb']:.0f} MB)",
            flush=True,
        )

        # (c) 30/s, enforced by the fake
        if not args.skip_slow:
            slow_bot = Bot.objects.create(token=make_token(700004), api_base_url=fake.base_url)
            make_members(slow_bot, args.slow_members)
            fake.control.enforce_limits(per_second=SLOW_RATE)
            limited_before = fake.control.rate_limited_count
            env = {"TELEGRAM_RATE_LIMIT": str(SLOW_RATE)}
            slow = cluster_broadcast(slow_bot, var_dir, env, args.slow_members, notes, sample_memory=False)
            result["slow_per_s"] = slow["sent"] / slow["span_s"]
            result["slow_ratio"] = result["slow_per_s"] / SLOW_RATE
            result["slow_429"] = fake.control.rate_limited_count - limited_before
            fake.control.disable_limits()
            print(
                f"  limit {SLOW_RATE}/s: {result['slow_per_s']:.2f} msg/s (x{result['slow_ratio']:.3f}), "
                f"{result['slow_429']} x 429",
                flush=True,
            )
        result["fake_stats"] = fake.control.stats()
    result["notes"] = notes
    return result


def paid_broadcast(var_dir: Path, members: int, notes: list[str], profile: bool) -> Result:
    """A paid broadcast through real clusters, the fake enforcing the paid and the free limits."""
    from django.conf import settings

    from bots.models import Bot
    from tests.fake_telegram import make_token

    with FakeTelegramProcess(var_dir, "--record", "counts") as fake:
        if profile:
            settings.TELEGRAM_PAID_RATE_LIMIT = PAID_RATE
            solo = Bot.objects.create(token=make_token(700006), api_base_url=fake.base_url)
            make_members(solo, 1000)
            profiler = cProfile.Profile()
            profiler.enable()
            per_s = in_process_sender(solo, notes, paid=True)
            profiler.disable()
            print(f"  one paid send_deliveries in-process: {per_s:,.0f} msg/s; where its main thread spends the time:")
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        bot = Bot.objects.create(token=make_token(700005), api_base_url=fake.base_url)
        make_members(bot, members)
        fake.control.enforce_limits(per_second=SLOW_RATE, paid_per_second=PAID_RATE)
        env = {"TELEGRAM_RATE_LIMIT": str(SLOW_RATE), "TELEGRAM_PAID_RATE_LIMIT": str(PAID_RATE)}
        paid = cluster_broadcast(bot, var_dir, env, members, notes, paid=True, fake=fake)
        rate = paid["sent"] / paid["span_s"]
        out: Result = {
            "paid_per_s": rate,
            "paid_ratio": rate / PAID_RATE,
            "paid_429": fake.control.rate_limited_count,
            "paid_wall_s": paid["wall_s"],
            "peak_rss_mb": paid["peak_rss_mb"],
            "paid_cpu_ms": paid["cpu_ms"],
        }
    print(
        f"  paid at {PAID_RATE}/s: {rate:,.0f} msg/s (x{out['paid_ratio']:.3f}), {out['paid_429']} x 429, "
        f"wall {out['paid_wall_s']:.1f} s, peak RSS {out['peak_rss_mb']:.0f} MB",
        flush=True,
    )
    return out


def crowded_windows(calls: list) -> list[str]:
    """For each 429 the fake answered: the accepted sends of the second before it, as the fake
    received them, and the two that arrived closest together (a send that reached it late,
    bunched with the next) -- which send crowded the window."""
    accepted = sorted(c.received_at for c in calls if c.status == 200)
    lines = []
    for refused in (c for c in calls if c.status == 429):
        inside = [t for t in accepted if refused.received_at - 1.0 < t <= refused.received_at]
        gaps = [(b - a, i) for i, (a, b) in enumerate(itertools.pairwise([*inside, refused.received_at]))]
        closest, at = min(gaps) if gaps else (0.0, 0)
        lines.append(
            f"429: {len(inside)} accepted within the second before it, over {inside[-1] - inside[0]:.3f} s; "
            f"closest two {1000 * closest:.1f} ms apart, the {at + 1}th and {at + 2}th of the window"
            if inside
            else "429 with nothing accepted in the second before it"
        )
    return lines


def many_bots(var_dir: Path, bots: int, members: int, notes: list[str]) -> Result:
    """`bots` bots broadcast at once, each at its own 30/s, through one pair of clusters."""
    from django.conf import settings
    from django.db.models import Count, Max, Min

    from bots.models import Bot
    from broadcasts.models import Broadcast, Delivery
    from broadcasts.tasks import start_broadcast
    from tests.clusters import ClusterProcess
    from tests.fake_telegram import make_token

    with FakeTelegramProcess(var_dir) as fake:  # every call recorded: 429s per bot
        made = [Bot.objects.create(token=make_token(720001 + i), api_base_url=fake.base_url) for i in range(bots)]
        for bot in made:
            make_members(bot, members)
        fake.control.enforce_limits(per_second=SLOW_RATE)
        env = {"TELEGRAM_RATE_LIMIT": str(SLOW_RATE), "QUEUE_BROADCASTS_WORKERS": str(bots)}
        clusters = [ClusterProcess("telegram", var_dir, **env), ClusterProcess("broadcasts", var_dir, **env)]
        database = (
            settings.DATABASES["default"]["NAME"]
            if settings.DATABASES["default"]["ENGINE"].endswith("postgresql")
            else ""
        )
        try:
            for cluster in clusters:
                cluster.start(wait=120)
            groups = {"broadcasts cluster": [clusters[1].process.pid], "telegram cluster": [clusters[0].process.pid]}
            groups["fake Telegram"] = [fake.process.pid]
            cpu_before = {name: backends.cpu_seconds(pgids) for name, pgids in groups.items()}
            cpu_before["PostgreSQL"] = backends.cpu_seconds(database=database)
            sent = [Broadcast.objects.create(bot=bot, text="Hello #first_name") for bot in made]
            for broadcast in sent:
                start_broadcast.enqueue(broadcast.pk)
            deadline = time.monotonic() + 120 + members / 10
            while Broadcast.objects.filter(pk__in=[b.pk for b in sent]).exclude(status="done").exists():
                if time.monotonic() > deadline:
                    raise RuntimeError("the broadcasts did not finish in time")
                time.sleep(0.5)
            cpu = {name: backends.cpu_seconds(pgids) - cpu_before[name] for name, pgids in groups.items()}
            cpu["PostgreSQL"] = backends.cpu_seconds(database=database) - cpu_before["PostgreSQL"]
        finally:
            for cluster in reversed(clusters):
                try:
                    cluster.stop()
                except RuntimeError:
                    cluster.kill()
        each = []
        for bot, broadcast in zip(made, sent, strict=True):
            bounds = Delivery.objects.filter(broadcast=broadcast, status="sent").aggregate(
                n=Count("pk"), first=Min("sent_at"), last=Max("sent_at")
            )
            calls = fake.control.calls("sendMessage", token=bot.token)
            limited = sum(1 for c in calls if c.status == 429)
            notes += [f"bot {bot.pk}: {line}" for line in crowded_windows(calls)]
            each.append((bounds["n"] / max((bounds["last"] - bounds["first"]).total_seconds(), 1e-6), limited))
        everything = Delivery.objects.filter(broadcast__in=sent, status="sent").aggregate(
            n=Count("pk"), first=Min("sent_at"), last=Max("sent_at")
        )
    total = everything["n"] / (everything["last"] - everything["first"]).total_seconds()
    out: Result = {
        "bots_total_per_s": total,
        "bots_ratio": total / (bots * SLOW_RATE),
        "bots_slowest_per_s": min(rate for rate, _ in each),
        "bots_429": sum(n for _, n in each),
        "bots_each": each,
        "bots_cpu_ms": {name: 1000 * seconds / everything["n"] for name, seconds in cpu.items()},
    }
    print(f"  {bots} bots: {total:.1f} msg/s in total (x{out['bots_ratio']:.3f}), {out['bots_429']} x 429", flush=True)
    return out


def make_members(bot: Any, count: int, first_id: int = 10_000_000) -> None:
    from bots.models import TelegramUser

    TelegramUser.objects.bulk_create(
        (
            TelegramUser(bot=bot, telegram_id=first_id + n, first_name=f"Member{n}", is_subscribed=True)
            for n in range(count)
        ),
        batch_size=5000,
    )


def fan_out_timed(bot: Any, members: int) -> tuple[Any, Result]:
    """A sending broadcast to `bot`'s members fanned out as start_broadcast does it (a first
    batch, then the rest batch by batch): the broadcast, and how long each part took."""
    from django.db import transaction

    from broadcasts.models import Broadcast
    from broadcasts.sending import FIRST_BATCH, fan_out, fan_out_more

    broadcast = Broadcast.objects.create(bot=bot, text="Hello #first_name", status=Broadcast.Status.SENDING)
    started = time.perf_counter()
    with transaction.atomic():
        fan_out(broadcast, FIRST_BATCH)
    first_batch_s = time.perf_counter() - started
    while fan_out_more(broadcast.pk):
        pass
    fanout_s = time.perf_counter() - started
    created = broadcast.deliveries.count()
    if created != members:
        raise RuntimeError(f"the fan-out created {created} deliveries for {members} members")
    return broadcast, {"fanout_s": fanout_s, "first_batch_s": first_batch_s}


def time_fan_out(bot: Any) -> Result:
    broadcast, figures = fan_out_timed(bot, bot.members.count())
    broadcast.deliveries.all()._raw_delete(broadcast.deliveries.db)
    broadcast.delete()
    return figures


def in_process_sender(bot: Any, notes: list[str], paid: bool = False) -> float:
    """One send_deliveries job, run here: a broadcast to `bot`'s members."""
    from django.db import transaction
    from django.utils import timezone

    from broadcasts.models import Broadcast
    from broadcasts.sending import fan_out
    from broadcasts.tasks import send_deliveries

    broadcast = Broadcast.objects.create(
        bot=bot,
        text="Hello #first_name",
        status=Broadcast.Status.SENDING,
        started_at=timezone.now(),
        allow_paid_broadcast=paid,
    )
    with transaction.atomic():
        fan_out(broadcast)
    started = time.perf_counter()
    outcome = send_deliveries(broadcast.pk)
    elapsed = time.perf_counter() - started
    if outcome.get("sent") != broadcast.deliveries.count():
        notes.append(f"in-process send_deliveries: {outcome}")
    return outcome.get("sent", 0) / elapsed


def cluster_broadcast(
    bot: Any,
    var_dir: Path,
    env: dict[str, str],
    members: int,
    notes: list[str],
    sample_memory: bool = True,
    paid: bool = False,
    fake: FakeTelegramProcess | None = None,
) -> Result:
    """start_broadcast enqueued as the admin does, run by fresh telegram and broadcasts clusters;
    with `fake`, the CPU time per message sent of each part (cpu_ms)."""
    from django.db.models import Max, Min
    from django.utils import timezone

    from broadcasts.models import Broadcast, Delivery
    from broadcasts.tasks import start_broadcast
    from tests.clusters import ClusterProcess

    clusters = [ClusterProcess("telegram", var_dir, **env), ClusterProcess("broadcasts", var_dir, **env)]
    with backends.clusters_running(clusters):
        sampler = backends.RssSampler([clusters[1].process.pid]) if sample_memory else None
        cpu_before = cpu_parts(clusters, fake)
        broadcast = Broadcast.objects.create(
            bot=bot, text="Hello #first_name, thank you for your support!", allow_paid_broadcast=paid
        )
        enqueued = timezone.now()
        start_broadcast.enqueue(broadcast.pk)
        deadline = time.monotonic() + 120 + members / 10
        while True:
            broadcast.refresh_from_db()
            if broadcast.status == Broadcast.Status.DONE:
                break
            for cluster in clusters:
                if cluster.process.poll() is not None:
                    raise RuntimeError(f"qcluster {cluster.queue} exited:\n{cluster.log()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"broadcast not done in time: {broadcast.counts()}")
            time.sleep(0.2)
        cpu = {part: seconds - cpu_before[part] for part, seconds in cpu_parts(clusters, fake).items()}
        if sampler:
            sampler.stop()
    counts = broadcast.counts()
    if counts.get("sent") != members:
        notes.append(f"broadcast to {members}: {counts}")
    sent = Delivery.objects.filter(broadcast=broadcast, status=Delivery.Status.SENT)
    bounds = sent.aggregate(first=Min("sent_at"), last=Max("sent_at"))
    out: Result = {
        "sent": sent.count(),
        "span_s": max((bounds["last"] - bounds["first"]).total_seconds(), 1e-6),
        "wall_s": (broadcast.finished_at - enqueued).total_seconds(),
    }
    if sampler:
        out.update(peak_rss_mb=sampler.peak_process / 1024, peak_group_rss_mb=sampler.peak_group / 1024)
    if fake is not None:
        out["cpu_ms"] = {part: 1000 * seconds / max(out["sent"], 1) for part, seconds in cpu.items()}
    return out


def cpu_parts(clusters: list, fake: FakeTelegramProcess | None) -> dict[str, float]:
    """CPU seconds so far of each part (backends.cpu_seconds): the clusters, and with `fake`,
    the fake Telegram and PostgreSQL's backends serving the benchmark's database."""
    from django.conf import settings

    if fake is None:
        return {}
    parts = {f"{c.queue} cluster": backends.cpu_seconds([c.process.pid]) for c in clusters}
    parts["fake Telegram"] = backends.cpu_seconds([fake.process.pid])
    database = settings.DATABASES["default"]
    parts["PostgreSQL"] = backends.cpu_seconds(database=database["NAME"] if "postgresql" in database["ENGINE"] else "")
    return parts


if __name__ == "__main__":
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    sys.exit(main())
