import json
import sys

from django.core.management.base import BaseCommand, CommandParser

from queueing import health


class Command(BaseCommand):
    help = (
        "Checks the database, each queue's broker and cluster, disk space for downloads, backlog and "
        "failures in the last hour. Exit status: 0 healthy, 1 degraded, 2 down."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--detailed", action="store_true", help="List every check, not only the problems.")
        parser.add_argument("--json", action="store_true", help="Print the report as JSON.")

    def handle(self, *args, detailed: bool, json: bool, **options) -> None:
        report = health.detailed()
        if json:
            self.stdout.write(_json(report.as_dict()))
        else:
            self.stdout.write(f"{report.status.upper()}")
            for check in report.checks if detailed else report.problems:
                line = f"  {check.status:<8} {check.name}" + (f": {check.detail}" if check.detail else "")
                self.stdout.write(line)
        sys.stdout.flush()
        sys.exit(report.exit_code)


def _json(data: dict) -> str:
    return json.dumps(data, indent=2)
