"""Every admin page an operator uses, timed with a campaign's worth of rows.

Fills, per backend: --pledges members and their pledges (a third overdue, names "Donor N"),
a sending broadcast to all of them with a delivery each (sent, failed, unknown, pending mixed),
20 more broadcasts, and --jobs job records (bench.dashboard's mix over 7 days, doubled with
INSERT ... SELECT up to the count), rolled up as the housekeepers would. Then each page below is
requested as a superuser (Django's test client, in process): once to warm up, then the median
and the slowest of --repeats. The goal is under 1 s for every page but the import itself
(bench.pledge_import measures that one with 100,000 rows).

    .venv/bin/python -m bench.pages [--backend sqlite|postgres|all] [--pledges 100000] [--jobs 1000000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from bench import backends

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/bench_pages"
BOT_TOKEN = "700000003:AAE-bench"
GOAL_MS = 1000
BACKENDS = {"sqlite": "sqlite", "postgres": "postgres"}

Result = dict[str, Any]


def main(argv: list[str] | None = None) -> int:
    return backends.run_backends(parse_args(argv), BACKENDS, measure, run_backend, print_table)


def run_backend(name: str, args: argparse.Namespace) -> Result:
    print(f"{args.pledges:,} pledges, {args.jobs:,} job records", flush=True)
    with backends.throwaway_storage(name, f"bench-pages-{name}-", args.postgres_url, lambda: None) as folder:
        env = backends.backend_env(name, folder, args.postgres_url, redis_url="")
        env.update(REDIS_URL="", ALLOWED_HOSTS="testserver", QUEUEING_JOB_MODULES="")
        options = ["--pledges", str(args.pledges), "--jobs", str(args.jobs), "--repeats", str(args.repeats)]
        return backends.run_measurement("bench.pages", name, env, folder, options)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = backends.argument_parser("bench.pages", __doc__, BACKENDS)
    parser.add_argument("--pledges", type=int, default=100_000)
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL, help="a database named bench*; it is dropped")
    return parser.parse_args(argv)


def print_table(results: list[Result], args: argparse.Namespace) -> None:
    header = ["page", *(f"{r['backend']} median / max" for r in results)]
    rows = [header, ["fill", *(f"{r['fill_s']:.0f} s" for r in results)]]
    for label in results[0]["pages"]:
        cells = []
        for result in results:
            page = result["pages"][label]
            slow = " SLOW" if page["max_ms"] > GOAL_MS else ""
            cells.append(f"{page['median_ms']:,.0f} / {page['max_ms']:,.0f} ms{slow}")
        rows.append([label, *cells])
    first = results[0]
    print(
        f"\n{first['pledges']:,} pledges and members, {first['jobs']:,} job records; {first['repeats']} requests each"
    )
    backends.print_aligned(rows)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"{os.cpu_count()} CPUs, load average {load}")


# --- The measuring subprocess ------------------------------------------------------------------


def measure(args: argparse.Namespace) -> Result:
    import django

    django.setup()
    from django.conf import settings

    static = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}
    settings.STORAGES = {**settings.STORAGES, "staticfiles": static}  # pages render without collectstatic
    from django.contrib.auth.models import User
    from django.test import Client

    started = time.perf_counter()
    ids = fill_campaign(args.pledges)
    fill_jobs(args.jobs)
    settle()
    fill_s = time.perf_counter() - started
    print(f"filled in {fill_s:.0f} s", flush=True)

    client = Client()
    client.force_login(User.objects.create_superuser("bench", "bench@example.com", "bench"))
    pages: dict[str, dict[str, float]] = {}
    for label, request in operator_pages(ids, Path(os.environ["VAR_DIR"])):
        request(client)  # templates compiled, the database's cache warm, as in service
        samples = []
        for _ in range(args.repeats):
            before = time.perf_counter()
            response = request(client)
            samples.append((time.perf_counter() - before) * 1000)
            assert response.status_code == 200, (label, response.status_code)
        pages[label] = {"median_ms": statistics.median(samples), "max_ms": max(samples)}
        print(f"{label}: {pages[label]['median_ms']:,.0f} ms", flush=True)
    return {
        "backend": args.measure,
        "pledges": args.pledges,
        "jobs": args.jobs,
        "repeats": args.repeats,
        "fill_s": fill_s,
        "pages": pages,
    }


def operator_pages(ids: dict[str, int], folder: Path):
    """(label, request) for each page, in the order an operator's day meets them."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    from queueing.models import JobRecord

    failed_job = JobRecord.objects.filter(status="failed").order_by("-enqueued_at").values_list("pk", flat=True)[0]
    broadcast, draft = ids["broadcast"], ids["draft"]
    upload = folder / "pledges-1000.csv"
    write_changed_sample(upload, 1000)

    def get(url: str):
        return lambda client: client.get(url)

    def check_import(client):
        file = SimpleUploadedFile("pledges.csv", upload.read_bytes(), content_type="text/csv")
        return client.post("/admin/broadcasts/pledge/import/", {"bot": ids["bot"], "file": file})

    return [
        ("admin index", get("/admin/")),
        ("queue dashboard, 24 h", get("/admin/queues/?hours=24")),
        ("queue dashboard JSON, 24 h", get("/admin/queues/data.json?hours=24")),
        ("job list", get("/admin/queueing/jobrecord/")),
        ("job list: failed", get("/admin/queueing/jobrecord/?status__exact=failed")),
        (
            "job list: telegram, failed, 24 h",
            get("/admin/queueing/jobrecord/?queue=telegram&status__exact=failed&enqueued=24h"),
        ),
        ("job list: a kind", get("/admin/queueing/jobrecord/?kind=broadcasts.tasks.send_deliveries")),
        ("job list: searched", get("/admin/queueing/jobrecord/?q=chat+not+found")),
        ("job page", get(f"/admin/queueing/jobrecord/{failed_job}/change/")),
        ("broadcast list", get("/admin/broadcasts/broadcast/")),
        ("broadcast preview (all members)", get(f"/admin/broadcasts/broadcast/{draft}/preview/")),
        ("broadcast confirm (all members)", get(f"/admin/broadcasts/broadcast/{draft}/confirm/")),
        ("broadcast progress", get(f"/admin/broadcasts/broadcast/{broadcast}/progress/")),
        ("broadcast progress JSON", get(f"/admin/broadcasts/broadcast/{broadcast}/progress.json")),
        ("deliveries of the broadcast", get(f"/admin/broadcasts/delivery/?broadcast__id__exact={broadcast}")),
        (
            "deliveries: failed",
            get(f"/admin/broadcasts/delivery/?broadcast__id__exact={broadcast}&status__exact=failed"),
        ),
        ("pledges list with totals", get("/admin/broadcasts/pledge/")),
        ("pledges: overdue", get("/admin/broadcasts/pledge/?overdue=yes")),
        ("pledges: searched by name", get("/admin/broadcasts/pledge/?q=Donor+4242")),
        ("pledge import summary (1,000 rows)", check_import),
        ("members list", get("/admin/bots/telegramuser/")),
    ]


def write_changed_sample(path: Path, rows: int) -> None:
    """The first `rows` pledges again, every 10th amount changed and one line wrong."""
    lines = ["telegram_id,amount,paid_amount,due_date,name,currency,campaign"]
    for i in range(rows):
        amount = "lots" if i == rows // 2 else str(pledge_amount(i) + (7 if i % 10 == 0 else 0))
        lines.append(f"{10_000_000 + i},{amount},0,,Donor {i},USD,Spring")
    path.write_text("\n".join(lines) + "\n")


def pledge_amount(i: int) -> int:
    return 100 + i % 900


def fill_campaign(count: int) -> dict[str, int]:
    from django.db import transaction
    from django.utils import timezone

    from bots.models import Bot, TelegramUser
    from broadcasts.models import Broadcast, Delivery, Pledge

    bot = Bot.objects.create(token=BOT_TOKEN, username="bench_bot")
    now, today = timezone.now(), date.today()
    batch = 5000
    with transaction.atomic():
        TelegramUser.objects.bulk_create(
            (
                TelegramUser(
                    bot=bot,
                    telegram_id=10_000_000 + i,
                    first_name=f"Member{i}",
                    is_subscribed=i % 50 != 0,
                    language_code="en",
                )
                for i in range(count)
            ),
            batch_size=batch,
        )
    members = dict(TelegramUser.objects.filter(bot=bot).values_list("telegram_id", "pk"))
    with transaction.atomic():
        Pledge.objects.bulk_create(
            (
                Pledge(
                    bot=bot,
                    member_id=members[10_000_000 + i],
                    telegram_id=10_000_000 + i,
                    name=f"Donor {i}",
                    amount=pledge_amount(i),
                    paid_amount=(0, pledge_amount(i) // 2, pledge_amount(i))[i % 3],
                    due_date=today + timedelta(days=i * 37 % 180 - 60),
                    campaign="Spring",
                )
                for i in range(count)
            ),
            batch_size=batch,
        )
    for n in range(20):
        Broadcast.objects.create(bot=bot, title=f"Old news {n}", text="Hi #first_name", status="done", finished_at=now)
    draft = Broadcast.objects.create(bot=bot, title="Thank you", text="Dear #first_name, your balance is #balance")
    sending = Broadcast.objects.create(
        bot=bot, title="Reminder", text="Hi #first_name", status="sending", started_at=now - timedelta(minutes=30)
    )
    states = ["sent"] * 90 + ["failed"] * 3 + ["unknown"] * 2 + ["pending"] * 5
    with transaction.atomic():
        Delivery.objects.bulk_create(
            (
                Delivery(
                    broadcast=sending,
                    member_id=pk,
                    chat_id=telegram_id,
                    status=states[i % len(states)],
                    error="Forbidden: bot was blocked by the user" if states[i % len(states)] == "failed" else "",
                    sent_at=now - timedelta(seconds=i % 1800) if states[i % len(states)] == "sent" else None,
                )
                for i, (telegram_id, pk) in enumerate(members.items())
            ),
            batch_size=batch,
        )
    return {"bot": bot.pk, "broadcast": sending.pk, "draft": draft.pk}


def settle() -> None:
    """On PostgreSQL, VACUUM ANALYZE every table, as autovacuum does within a minute or two of
    such an import: pages are measured with the planner's statistics of the rows they show."""
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")


def fill_jobs(count: int) -> None:
    """bench.dashboard's mix of 50,000 (or fewer) records, then copies of them by INSERT ... SELECT
    until there are `count` (each copy keeps its times: the same 7 days, denser)."""
    from django.db import connection

    from bench.dashboard import fill
    from queueing.models import JobRecord
    from queueing.queues import queue_names
    from queueing.stats import roll_up

    fill(min(count, 50_000))
    table = JobRecord._meta.db_table
    columns = ", ".join(
        connection.ops.quote_name(f.column) for f in JobRecord._meta.concrete_fields if not f.primary_key
    )
    have = JobRecord.objects.count()
    with connection.cursor() as cursor:
        while have < count:
            cursor.execute(
                f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {table} "  # the names come from the model
                f"WHERE status IN ('succeeded', 'failed', 'cancelled') ORDER BY id LIMIT %s",
                [count - have],
            )
            have += cursor.rowcount
    for queue in queue_names():
        roll_up(queue)


if __name__ == "__main__":
    sys.exit(main())
