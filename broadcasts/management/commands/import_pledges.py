from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from bots.management.commands._bot_option import add_bot_argument, chosen_bot
from broadcasts.importing import ImportResult, import_pledges


class Command(BaseCommand):
    help = (
        "Import pledges from a CSV file with the columns telegram_id, amount, paid_amount, due_date "
        "(YYYY-MM-DD) and optionally name, currency, campaign. Importing a file again updates, never duplicates."
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
        result = self.run_import(bot, options["file"], options["dry_run"], options["skip_errors"])
        if options["verbosity"] > 1:
            for row in result.rows:
                changes = f" ({', '.join(row.changes)})" if row.changes else ""
                self.stdout.write(f"line {row.line}: {row.action} {row.telegram_id} {row.campaign}{changes}".rstrip())
        for line, reason in result.errors:
            self.stderr.write(f"line {line}: {reason}")
        if result.errors and not result.applied:
            raise CommandError(result.summary())
        self.stdout.write(self.style.SUCCESS(result.summary()))

    def run_import(self, bot, path: Path, dry_run: bool, skip_errors: bool) -> ImportResult:
        try:
            with path.open(encoding="utf-8-sig", newline="") as file:
                return import_pledges(bot, file, dry_run=dry_run, skip_errors=skip_errors)
        except FileNotFoundError:
            raise CommandError(f"No such file: {path}") from None
        except UnicodeDecodeError:
            raise CommandError(f"{path} is not UTF-8 text. Save it from your spreadsheet as “CSV UTF-8”.") from None
