from datetime import datetime, time

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import Q
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from queueing.jobs import retry_all
from queueing.models import JobQuerySet, JobRecord
from queueing.queues import get_queue


class Command(BaseCommand):
    help = (
        "Retries failed jobs as new jobs linked to them. Jobs that were retried already are left alone. "
        "Filters combine: --queue telegram --kind bots.tasks.handle_update --since 2025-01-31T12:00."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--queue", help="Only jobs of this queue.")
        parser.add_argument("--kind", help="Only jobs of this kind: its full dotted name or its last part.")
        parser.add_argument(
            "--since", help="Only jobs that failed at or after this ISO date or time (server time zone if none)."
        )
        parser.add_argument("--dry-run", action="store_true", help="Show which jobs would be retried; change nothing.")

    def handle(self, *args, queue: str | None, kind: str | None, since: str | None, dry_run: bool, **options) -> None:
        jobs = JobRecord.objects.failed().not_retried()
        if queue is not None:
            jobs = jobs.in_queue(_known_queue(queue))
        if kind is not None:
            jobs = _of_kind(jobs, kind)
        if since is not None:
            jobs = jobs.filter(finished_at__gte=_parse_moment(since))
        if dry_run:
            ids = list(jobs.order_by("pk").values_list("pk", flat=True))
            listed = f": {', '.join(map(str, ids))}" if ids else "."
            self.stdout.write(f"Would retry {len(ids)} failed jobs{listed}")
            return
        self.stdout.write(f"Retried {retry_all(jobs)} failed jobs.")


def _known_queue(name: str) -> str:
    try:
        return get_queue(name).name
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def _of_kind(jobs: JobQuerySet, kind: str) -> JobQuerySet:
    return jobs.filter(Q(kind=kind) | Q(kind__endswith=f".{kind}"))


def _parse_moment(value: str) -> datetime:
    try:
        moment = parse_datetime(value)
        if moment is None and (day := parse_date(value)) is not None:
            moment = datetime.combine(day, time.min)
    except ValueError:
        moment = None
    if moment is None:
        raise CommandError(f"--since {value!r} is not an ISO date or time, such as 2025-01-31 or 2025-01-31T12:00")
    return timezone.make_aware(moment) if timezone.is_naive(moment) else moment
