from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, OutputWrapper

from bots.management.commands._bot_option import add_bot_argument, chosen_bot
from broadcasts.importing import ImportResult, count_lines, import_pledges

MAX_ERRORS_SHOWN = 1000


class Command(BaseCommand):
    help = (
        "Import pledges from a CSV file with the columns telegram_id, amount, paid_amount, due_date "
        "(YYYY-MM-DD) and optionally name, currency, campaign. Importing a file again updates, never duplicates. "
        "On a terminal, a progress line shows on stderr."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path, help="The CSV file (UTF-8; comma, semicolon or tab separated).")
        parser.add_argument("--dry-run", action="store_true", help="Check the file and report; change nothing.")
        parser.add_argument(
            "--skip-errors", action="store_true", help="Import the good rows even when some rows have errors."
        )
        add_bot_argument(parser)

    def handle(self, *args, **options):
        bot = chosen_bot(options)
        every_row = options["verbosity"] > 1
        result = self.run_import(bot, options["file"], options["dry_run"], options["skip_errors"], every_row)
        if every_row:
            for row in result.rows:
                changes = f" ({', '.join(row.changes)})" if row.changes else ""
                self.stdout.write(f"line {row.line}: {row.action} {row.telegram_id} {row.campaign}{changes}".rstrip())
        for error in result.errors:
            self.stderr.write(f"line {error.line}: {error.reason}")
        if result.error_count > len(result.errors):
            self.stderr.write(f"... and {result.error_count - len(result.errors)} more errors")
        if result.error_count and not result.applied:
            raise CommandError(result.summary())
        self.stdout.write(self.style.SUCCESS(result.summary()))

    def run_import(self, bot, path: Path, dry_run: bool, skip_errors: bool, every_row: bool) -> ImportResult:
        try:
            progress = ProgressLine(count_lines(path), self.stderr) if self.stderr.isatty() else None
            with path.open(encoding="utf-8-sig", newline="") as file:
                result = import_pledges(
                    bot,
                    file,
                    dry_run=dry_run,
                    skip_errors=skip_errors,
                    sample_size=None if every_row else MAX_ERRORS_SHOWN,
                    progress=progress,
                )
        except FileNotFoundError:
            raise CommandError(f"No such file: {path}") from None
        if progress:
            progress.finish()
        return result


class ProgressLine:
    """` 42% 42,000/100,000 lines`, rewritten in place on a terminal (tqdm is not a dependency)."""

    def __init__(self, total_lines: int, stream: OutputWrapper):
        self.total = max(total_lines, 1)
        self.stream = stream

    def __call__(self, lines: int) -> None:
        percent = min(100, 100 * lines // self.total)
        self.stream.write(f"\r{percent:3d}% {lines:,}/{self.total:,} lines", ending="")
        self.stream.flush()

    def finish(self) -> None:
        self.stream.write("")
