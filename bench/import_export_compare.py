"""Our pledge importer against django-import-export, on the same files.

django-import-export is not a dependency: install it (with its xlsx extra) to run this,
`.venv/bin/pip install "django-import-export[xlsx]"`. For each backend (SQLite in a /tmp folder;
PostgreSQL in a database named bench*, dropped and recreated, and dropped at the end), with
bench.pledge_import's files (--rows pledges, a third of the members /started; the "changed"
file has every 10th amount changed, every 1000th row wrong and 1% new rows), each step in a
process of its own (time, and its peak RSS from getrusage):

  import      the file into an empty table: `manage.py import_pledges` / a ModelResource with
              (telegram_id, campaign) as its import id, bulk writes of 1,000, diffs off
              (the library's fastest settings that still update);
  dry run     the changed file checked against the filled table, nothing written: our
              `--dry-run` / `import_data(dry_run=True)` with skip_unchanged (its admin preview);
              the summary each gives and the first error, with the offending row if it says it;
  export      every pledge: our CSV (`broadcasts.exports.pledges_csv`) / the resource's CSV and XLSX.

    .venv/bin/python -m bench.import_export_compare [--backend sqlite|postgres|all] [--rows 100000]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import backends
from bench.pledge_import import write_csv

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/bench_import_export"
BOT_TOKEN = "700000002:AAE-bench"
# Ours imports last, so the dry runs and exports see its table (members linked, as it does).
STEPS = ["theirs_import", "ours_import", "ours_dry", "theirs_dry", "ours_export", "theirs_export"]

Result = dict[str, Any]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.measure:
        Path(args.result_file).write_text(json.dumps(measure(args)))
        return 0
    if args.step:
        print(json.dumps(run_step(args.step, Path(args.file))))
        return 0
    names = ["sqlite", "postgres"] if args.backend == "all" else [args.backend]
    results = []
    for name in names:
        print(f"=== {name}", flush=True)
        with backends.throwaway_storage(name, f"bench-ie-{name}-", args.postgres_url, lambda: None) as folder:
            env = backends.backend_env(name, folder, args.postgres_url, redis_url="")
            env["REDIS_URL"] = ""
            results.append(
                backends.run_measurement("bench.import_export_compare", name, env, folder, ["--rows", str(args.rows)])
            )
    print_table(results, args.rows)
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.import_export_compare")
    parser.add_argument("--backend", choices=["sqlite", "postgres", "all"], default="sqlite")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL, help="a database named bench*; it is dropped")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--result-file", help=argparse.SUPPRESS)
    parser.add_argument("--step", choices=STEPS, help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def print_table(results: list[Result], rows: int) -> None:
    for result in results:
        print(f"\n{result['backend']}, {rows:,} rows      ours              django-import-export")
        for label, step in (("import", "import"), ("dry run of the changed file", "dry"), ("export", "export")):
            ours, theirs = result[f"ours_{step}"], result[f"theirs_{step}"]
            figures = [f"{each['s']:6.1f} s {each['rss_mb']:5.0f} MB" for each in (ours, theirs)]
            print(f"  {label:<28} {figures[0]}   {figures[1]}")
        print(f"  dry-run summary, ours:   {result['ours_dry']['summary']}")
        print(f"  dry-run summary, theirs: {result['theirs_dry']['summary']}")
        print(f"  first error, ours:   {result['ours_dry']['first_error']}")
        print(f"  first error, theirs: {result['theirs_dry']['first_error']}")
        print(f"  export, ours:   {result['ours_export']['what']}")
        print(f"  export, theirs: {result['theirs_export']['what']}")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\n{os.cpu_count()} CPUs, load average {load}; RSS is each step's own process (Django itself ~60 MB)")


# --- The measuring subprocess: files, then each step in a process of its own ----------------------


def measure(args: argparse.Namespace) -> Result:
    import django

    django.setup()
    from bots.models import Bot, TelegramUser
    from broadcasts.models import Pledge

    folder = Path(os.environ["VAR_DIR"])
    bot = Bot.objects.create(token=BOT_TOKEN)
    TelegramUser.objects.bulk_create(
        (TelegramUser(bot=bot, telegram_id=10_000_000 + i, first_name=f"M{i}") for i in range(0, args.rows, 3)),
        batch_size=2000,
    )
    first, changed = folder / "pledges.csv", folder / "pledges-changed.csv"
    write_csv(first, args.rows, changed=False)
    write_csv(changed, args.rows, changed=True)
    result: Result = {"backend": args.measure}
    for step in STEPS:
        if step.endswith("_import"):
            Pledge.objects.all().delete()
        result[step] = step_in_a_process(step, changed if step.endswith("_dry") else first)
        print(f"{step}: {result[step]['s']:.1f} s, {result[step]['rss_mb']:.0f} MB", flush=True)
        assert Pledge.objects.count() == args.rows, (step, Pledge.objects.count())
    return result


def step_in_a_process(step: str, file: Path) -> Result:
    done = subprocess.run(
        [sys.executable, "-m", "bench.import_export_compare", "--step", step, "--file", str(file)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_step(step: str, file: Path) -> Result:
    import django

    django.setup()
    from bots.models import Bot

    bot = Bot.objects.get(token=BOT_TOKEN)
    started = time.perf_counter()
    found = STEP_FUNCTIONS[step](bot, file)
    seconds = time.perf_counter() - started
    return {"s": seconds, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **found}


def ours_import(bot, file: Path) -> Result:
    from django.core.management import call_command

    call_command("import_pledges", str(file), bot=bot.telegram_id, stdout=io.StringIO(), stderr=io.StringIO())
    return {}


def ours_dry(bot, file: Path) -> Result:
    from broadcasts.management.commands.import_pledges import Command

    result = Command(stdout=io.StringIO(), stderr=io.StringIO()).run_import(
        bot, file, dry_run=True, skip_errors=False, every_row=False
    )
    first = result.errors[0] if result.errors else None
    first_error = f"line {first.line}: {first.reason}; the line: {first.content}" if first else "-"
    return {"summary": result.summary()[:160], "first_error": first_error[:160]}


def ours_export(bot, file: Path) -> Result:
    from broadcasts.exports import pledges_csv
    from broadcasts.models import Pledge

    size = sum(len(chunk) for chunk in pledges_csv(Pledge.objects.all()).streaming_content)
    return {"what": f"CSV {size / 1024 / 1024:.1f} MB (no XLSX)"}


def pledge_resource(bot, **options):
    """A ModelResource for pledges, as an adopter would write it: the bot set on new rows."""
    from import_export import resources

    from broadcasts.models import Pledge

    meta = type(
        "Meta",
        (),
        {
            "model": Pledge,
            "import_id_fields": ("telegram_id", "campaign"),
            "fields": ("telegram_id", "amount", "paid_amount", "due_date", "name", "currency", "campaign"),
            "batch_size": 1000,
            **options,
        },
    )

    class PledgeResource(resources.ModelResource):
        Meta = meta

        def get_queryset(self):
            return Pledge.objects.filter(bot=bot)

        def init_instance(self, row=None):
            return Pledge(bot=bot)

    return PledgeResource()


def dataset_of(file: Path):
    import tablib

    return tablib.Dataset().load(file.read_text(), format="csv")


def theirs_import(bot, file: Path) -> Result:
    result = pledge_resource(bot, use_bulk=True, skip_diff=True).import_data(dataset_of(file), dry_run=False)
    assert not result.has_errors() and not result.has_validation_errors(), "import failed"
    return {}


def theirs_dry(bot, file: Path) -> Result:
    result = pledge_resource(bot, skip_unchanged=True, report_skipped=True).import_data(
        dataset_of(file), dry_run=True, collect_failed_rows=True
    )
    totals = ", ".join(f"{kind} {n}" for kind, n in result.totals.items() if n)
    first_error = "-"
    if result.invalid_rows:
        invalid = result.invalid_rows[0]
        first_error = f"row {invalid.number}: {invalid.error_dict} values {invalid.values}"
    elif result.row_errors():
        number, errors = result.row_errors()[0]
        first_error = f"row {number}: {errors[0].error!r} row {dict(errors[0].row)}"
    return {"summary": totals, "first_error": first_error[:160]}


def theirs_export(bot, file: Path) -> Result:
    dataset = pledge_resource(bot).export()
    started = time.perf_counter()
    csv_size = len(dataset.export("csv"))
    csv_s = time.perf_counter() - started
    xlsx = dataset.export("xlsx")
    megabytes = csv_size / 1024 / 1024, len(xlsx) / 1024 / 1024
    return {"what": f"CSV {megabytes[0]:.1f} MB ({csv_s:.1f} s of the total), XLSX {megabytes[1]:.1f} MB"}


STEP_FUNCTIONS = {
    "ours_import": ours_import,
    "theirs_import": theirs_import,
    "ours_dry": ours_dry,
    "theirs_dry": theirs_dry,
    "ours_export": ours_export,
    "theirs_export": theirs_export,
}


if __name__ == "__main__":
    sys.exit(main())
