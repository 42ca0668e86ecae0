"""Pledge import at scale: the command, the admin's check-then-import, the pledges list and its export.

For each backend (SQLite + the ORM broker in a /tmp/bench-pledges-* folder; PostgreSQL in the
database bench_pledges, dropped and recreated, and dropped at the end), in a subprocess of its own:

  command       `manage.py import_pledges` of a generated --rows CSV (100,000 by default; a third of
                the Telegram ids belong to members who have /started) into an empty table: wall
                time and peak RSS (resource.getrusage(RUSAGE_CHILDREN) of that subprocess);
  admin check   the upload of a second file (every 10th row changed, every 1000th row wrong, 1,000
                new rows) by a staff user (Django's test client): time and size of the summary page;
  admin import  the summary's one "Import these N rows" button: time;
  list          the pledges changelist over the imported pledges (totals included), filtered by
                overdue, and searched by name: median of 5 requests each;
  export        the CSV of every pledge, streamed to the end: time and size.

Run from the project folder (about a minute per backend at the defaults):

    .venv/bin/python -m bench.pledge_import [--backend sqlite|postgres|all] [--rows 100000]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from bench import backends

ROOT = Path(__file__).resolve().parent.parent
BACKENDS = {"sqlite": "sqlite", "postgres": "postgres"}
DEFAULT_POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/bench_pledges"
BOT_TOKEN = "700000001:AAE-bench"
REPEATS = 5

Result = dict[str, Any]


def main(argv: list[str] | None = None) -> int:
    return backends.run_backends(parse_args(argv), BACKENDS, measure, run_backend, print_table)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = backends.argument_parser("bench.pledge_import", __doc__, BACKENDS)
    parser.add_argument("--rows", type=int, default=100_000, help="rows of the generated CSV")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL, help="a database named bench*; it is dropped")
    return parser.parse_args(argv)


def run_backend(name: str, args: argparse.Namespace) -> Result:
    with backends.throwaway_storage(name, f"bench-pledges-{name}-", args.postgres_url, lambda: None) as folder:
        env = backends.backend_env(name, folder, args.postgres_url, redis_url="")
        env["REDIS_URL"] = ""  # no queue is used: the ORM broker on either database
        return backends.run_measurement("bench.pledge_import", name, env, folder, ["--rows", str(args.rows)])


def print_table(results: list[Result], args: argparse.Namespace) -> None:
    rows: list[tuple[str, ...]] = [("", *(r["backend"] for r in results))]

    def row(label: str, key: str, spec: str) -> None:
        rows.append((label, *(format(r[key], spec) for r in results)))

    row(f"import_pledges command, {args.rows:,} rows (s)", "command_s", ".1f")
    row("  peak RSS of the command (MB)", "command_rss_mb", ".0f")
    row("admin check of the changed file (s)", "check_s", ".1f")
    row("  summary page (KB)", "check_kb", ",.0f")
    row("admin import, one button (s)", "import_s", ".1f")
    row("pledges list, median (ms)", "list_ms", ",.0f")
    row("  filtered: overdue (ms)", "list_overdue_ms", ",.0f")
    row("  searched: a name (ms)", "list_search_ms", ",.0f")
    row("CSV export of every pledge (s)", "export_s", ".1f")
    row("  export size (MB)", "export_mb", ".1f")
    backends.print_aligned(rows)
    summary = results[0]["summary"]
    print(f"\nthe check's summary: {summary}")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"{os.cpu_count()} CPUs, load average {load}")


# --- The measuring subprocess ------------------------------------------------------------------


def write_csv(path: Path, rows: int, changed: bool) -> None:
    """Row i pledges for Telegram id 10_000_000 + i; `changed`: every 10th amount differs, every
    1000th row is wrong, and 1% more rows are new."""
    today = date.today()
    lines = ["telegram_id,amount,paid_amount,due_date,name,currency,campaign"]
    for i in range(rows + (rows // 100 if changed else 0)):
        if changed and i % 1000 == 999:
            lines.append(f"{10_000_000 + i},lots,0,,Donor {i},USD,Spring")
            continue
        amount = 100 + i % 900 + (7 if changed and i % 10 == 0 else 0)
        paid = (0, amount // 2, amount)[i % 7 % 3]
        due = today + timedelta(days=i * 37 % 180 - 60)
        lines.append(f"{10_000_000 + i},{amount},{paid},{due.isoformat()},Donor {i},USD,Spring")
    path.write_text("\n".join(lines) + "\n")


def measure(args: argparse.Namespace) -> Result:
    import django

    django.setup()
    from django.conf import settings

    static = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}
    settings.STORAGES = {**settings.STORAGES, "staticfiles": static}  # pages render without collectstatic
    from django.contrib.auth.models import User
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.test import Client

    from bots.models import Bot, TelegramUser
    from broadcasts.models import Pledge

    folder = Path(os.environ["VAR_DIR"])
    bot = Bot.objects.create(token=BOT_TOKEN)
    TelegramUser.objects.bulk_create(
        (TelegramUser(bot=bot, telegram_id=10_000_000 + i, first_name=f"M{i}") for i in range(0, args.rows, 3)),
        batch_size=2000,
    )
    first, second = folder / "pledges.csv", folder / "pledges-changed.csv"
    write_csv(first, args.rows, changed=False)
    write_csv(second, args.rows, changed=True)

    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "manage.py", "import_pledges", str(first), "--bot", str(bot.telegram_id)],
        cwd=ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    command_s = time.perf_counter() - started
    command_rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    assert Pledge.objects.count() == args.rows
    print(f"command: {command_s:.1f} s, {command_rss_mb:.0f} MB", flush=True)

    client = Client(SERVER_NAME="localhost")
    client.force_login(User.objects.create_superuser("bench", "bench@example.com", "bench"))
    client.get("/admin/broadcasts/pledge/import/")
    upload = SimpleUploadedFile("pledges.csv", second.read_bytes(), content_type="text/csv")
    started = time.perf_counter()
    page = client.post("/admin/broadcasts/pledge/import/", {"bot": bot.pk, "file": upload})
    check_s = time.perf_counter() - started
    assert page.status_code == 200, page.status_code
    html = page.content.decode()
    summary = html.split('id="import-summary"', 1)[1].split(">", 1)[1].split("<", 1)[0]
    token = html.split('name="token" value="', 1)[1].split('"', 1)[0]
    print(f"admin check: {check_s:.1f} s, {len(page.content) / 1024:.0f} KB: {summary}", flush=True)

    started = time.perf_counter()
    done = client.post("/admin/broadcasts/pledge/import/", {"bot": bot.pk, "token": token})
    import_s = time.perf_counter() - started
    assert done.status_code == 302, done.status_code
    print(f"admin import: {import_s:.1f} s", flush=True)

    def median_ms(url: str) -> float:
        client.get(url)
        samples = []
        for _ in range(REPEATS):
            before = time.perf_counter()
            response = client.get(url)
            samples.append((time.perf_counter() - before) * 1000)
            assert response.status_code == 200, (url, response.status_code)
        return statistics.median(samples)

    lists = {
        "list_ms": median_ms("/admin/broadcasts/pledge/"),
        "list_overdue_ms": median_ms("/admin/broadcasts/pledge/?overdue=yes"),
        "list_search_ms": median_ms("/admin/broadcasts/pledge/?q=Donor+4242"),
    }
    started = time.perf_counter()
    export = client.get("/admin/broadcasts/pledge/export/")
    size = sum(len(chunk) for chunk in export.streaming_content)
    export_s = time.perf_counter() - started
    return {
        "backend": args.measure,
        "command_s": command_s,
        "command_rss_mb": command_rss_mb,
        "check_s": check_s,
        "check_kb": len(page.content) / 1024,
        "summary": summary,
        "import_s": import_s,
        **lists,
        "export_s": export_s,
        "export_mb": size / 1024 / 1024,
    }


if __name__ == "__main__":
    sys.exit(main())
