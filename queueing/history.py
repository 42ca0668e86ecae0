"""The questions apps ask of the job history, so that no app queries JobRecord's fields
itself: is this work already waiting or running, which job carries on after an operator's
retry, was that the job's last attempt; and how much of the history is kept."""

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from queueing.jobs import Job
from queueing.locks import try_lock
from queueing.models import JobQuerySet, JobRecord
from queueing.stats import counted

logger = logging.getLogger(__name__)

PRUNE_INTERVAL = 60.0
# Batches of 500 per run: pruning a backlog of millions must not hold up the cluster's
# heartbeat, a duty of the same loop; 5,000 a minute is over 7 million a day.
PRUNE_BATCHES = 10


def unfinished() -> JobQuerySet:
    """Jobs queued, retrying or running: for a relation, `filter(job__in=unfinished())`."""
    return JobRecord.objects.unfinished()


def pending(job: Job, *args) -> bool:
    """Whether a `job` with exactly these arguments is queued, retrying or running. The
    arguments are compared in Python: JSON lookups differ between databases, and the
    unfinished jobs of one kind are few."""
    wanted = list(args)
    return any(found == wanted for found in unfinished().filter(kind=job.kind).values_list("args", flat=True))


def ended_before(moment: datetime) -> JobQuerySet:
    """Jobs that finished (however they ended) before `moment`: for a relation,
    `filter(job__in=ended_before(...))`."""
    return JobRecord.objects.finished_before(moment)


def busy_with(*jobs: Job, since: datetime) -> set:
    """What jobs of these kinds are about (their first argument: an update, a broadcast)
    while one is queued, retrying or running, or ended since `since` (its successor may not
    be recorded yet; one that failed because its worker died on its last attempt has none)."""
    records = JobRecord.objects.of_kinds(*jobs)
    ended = records.finished_since(since).exclude(status=JobRecord.Status.FAILED, error_class=JobRecord.ErrorClass.LOST)
    return records.unfinished().first_args() | ended.first_args()


def failures(*jobs: Job, about) -> JobQuerySet:
    """The failed jobs of these kinds about `about` (their first argument), newest first; a
    job lost with its worker is a crash, not a reason of its own, and is left out."""
    records = JobRecord.objects.of_kinds(*jobs).failed().with_first_arg(about)
    return records.exclude(error_class=JobRecord.ErrorClass.LOST).order_by("-finished_at")


def latest_retry(job_id: int | None) -> int | None:
    """The newest job of a retry line: an operator's retry is a new job linked to the one it
    retries (queueing.jobs.retry), which may be retried in turn. `job_id` itself when nobody
    retried it."""
    newest = job_id
    while newest is not None and (retry := _retried_as(newest)):
        newest = retry
    return newest


def _retried_as(job_id: int) -> int | None:
    return JobRecord.objects.filter(retry_of_id=job_id).values_list("pk", flat=True).first()


def is_last_attempt(job_id: int | None) -> bool:
    """Whether the job has used all its attempts (a job that is gone has none left): a failure
    now is final, and the member can be told."""
    job = JobRecord.objects.filter(pk=job_id).values("attempts", "max_attempts").first()
    return job is None or job["attempts"] >= job["max_attempts"]


def prunable(cutoff: datetime) -> tuple[JobQuerySet, JobQuerySet]:
    """Jobs that finished before `cutoff` and may be deleted, and those that must wait
    because the statistics have not counted them yet (their queue's roll-up has not reached
    them): a later prune takes them."""
    old = JobRecord.objects.filter(counted(finished_before=cutoff))
    uncounted = JobRecord.objects.finished().filter(finished_at__lt=cutoff).exclude(counted(cutoff))
    return old, uncounted


def prune_duty(cluster: str) -> int:
    """The default cluster's duty (queueing.apps): delete the finished jobs older than
    JOB_HISTORY_DAYS days (0 keeps them for ever), in batches. Returns how many went."""
    if not settings.JOB_HISTORY_DAYS:
        return 0
    cutoff = timezone.now() - timedelta(days=settings.JOB_HISTORY_DAYS)
    with try_lock("queueing:prune") as held:
        deleted = prunable(cutoff)[0].delete_in_batches(batches=PRUNE_BATCHES) if held else 0
    if deleted:
        logger.info("Pruned %d jobs that finished over %d days ago", deleted, settings.JOB_HISTORY_DAYS)
    return deleted
