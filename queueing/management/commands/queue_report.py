import json

from django.core.management.base import BaseCommand, CommandError, CommandParser

from queueing.report import LONGEST_HOURS, build_report, render_table


class Command(BaseCommand):
    help = (
        "What the queues did in the last N hours: jobs by status, throughput, wait and run time "
        "p50/p95, failures by error class, and broadcast outcomes."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--hours", type=int, default=24, help=f"The window, in hours (default 24, at most {LONGEST_HOURS})."
        )
        parser.add_argument("--output", help="Write the report as JSON to this file.")
        parser.add_argument(
            "--format", choices=["json", "table"], help="json or table (default: table, or json with --output)."
        )

    def handle(self, *args, hours: int, output: str | None, format: str | None, **options) -> None:
        if not 1 <= hours <= LONGEST_HOURS:
            raise CommandError(f"--hours must be from 1 to {LONGEST_HOURS} (hourly statistics are kept that long).")
        report = build_report(hours)
        text = json.dumps(report, indent=2) + "\n" if (format or ("json" if output else "table")) == "json" else None
        if output:
            with open(output, "w", encoding="utf-8") as file:
                file.write(text if text is not None else render_table(report))
            self.stderr.write(f"Report written to {output}")
        else:
            self.stdout.write(text if text is not None else render_table(report), ending="")
