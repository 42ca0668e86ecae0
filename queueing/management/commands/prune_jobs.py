from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from queueing.history import prunable


class Command(BaseCommand):
    help = (
        "Deletes finished jobs (succeeded, failed or cancelled) that finished more than --days days ago, "
        "in batches. Queued, running and retrying jobs are never touched, nor finished jobs the statistics "
        "have not counted yet (their queue's roll-up has not reached them). Statistics are not affected: "
        "the roll-up prunes its own per-minute and hourly rows. The default cluster prunes by itself "
        "(JOB_HISTORY_DAYS); this is for doing it by hand."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--days", type=int, required=True, help="Keep jobs that finished within this many days.")
        parser.add_argument("--dry-run", action="store_true", help="Count what would be deleted; delete nothing.")

    def handle(self, *args, days: int, dry_run: bool, **options) -> None:
        if days < 0:
            raise CommandError("--days must be 0 or more.")
        cutoff = timezone.now() - timedelta(days=days)
        old, uncounted = prunable(cutoff)
        if dry_run:
            self.stdout.write(f"Would delete {old.count()} jobs that finished before {cutoff:%Y-%m-%d %H:%M %Z}.")
        else:
            deleted = old.delete_in_batches()
            self.stdout.write(f"Deleted {deleted} jobs that finished before {cutoff:%Y-%m-%d %H:%M %Z}.")
        if waiting := uncounted.count():
            self.stdout.write(f"Kept {waiting} jobs the statistics have not counted yet; they go in a later run.")
