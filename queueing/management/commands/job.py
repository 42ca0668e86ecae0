import json

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import models

from queueing.models import JobRecord

TIMINGS = ["enqueued_at", "dispatched_at", "started_at", "finished_at", "next_retry_at"]


class Command(BaseCommand):
    help = "Shows one job: every field, its timings, the jobs it retries or that retried it, and its traceback."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("job_id", metavar="ID", type=int, help="The job's id.")

    def handle(self, *args, job_id: int, **options) -> None:
        try:
            job = JobRecord.objects.select_related("retry_of").get(pk=job_id)
        except JobRecord.DoesNotExist:
            raise CommandError(f"There is no job {job_id}.") from None
        self._section(f"Job {job.pk}", _fields(job))
        self._section("Timings", _timings(job))
        self._section("Lineage", _lineage(job))
        self._section("Traceback", [("", job.traceback.rstrip() or "(none)")])

    def _section(self, title: str, rows: list[tuple[str, str]]) -> None:
        self.stdout.write(self.style.MIGRATE_HEADING(title))
        width = max(len(name) for name, _ in rows)
        for name, value in rows:
            self.stdout.write(f"  {name:<{width}}  {value}".rstrip() if name else value)
        self.stdout.write("")


def _fields(job: JobRecord) -> list[tuple[str, str]]:
    return [
        (field.name, _show(getattr(job, field.attname), field))
        for field in job._meta.concrete_fields
        if field.name not in (*TIMINGS, "traceback", "retry_of")
    ]


def _show(value, field: models.Field) -> str:
    if field.get_internal_type() == "JSONField":
        return json.dumps(value, ensure_ascii=False)
    return "" if value is None else str(value)


def _timings(job: JobRecord) -> list[tuple[str, str]]:
    rows = [(name.removesuffix("_at"), str(getattr(job, name) or "")) for name in TIMINGS]
    return [*rows, ("runtime", str(job.runtime or ""))]


def _lineage(job: JobRecord) -> list[tuple[str, str]]:
    retried_by = ", ".join(str(retry) for retry in job.retried_by.order_by("pk")) or "(none)"
    return [("retry of", str(job.retry_of) if job.retry_of else "(none)"), ("retried by", retried_by)]
