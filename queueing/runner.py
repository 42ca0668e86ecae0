"""What a django-q2 worker runs for every job: claim it, run it, record how it ended."""

import json
import logging
import math
import time

import sentry_sdk
from django_q.signals import pre_execute

from queueing.errors import PermanentError
from queueing.jobs import get_job
from queueing.models import JobRecord
from queueing.queues import current_worker, get_queue
from queueing.sentry import job_scope

logger = logging.getLogger(__name__)

_current_task_id = ""
# time.monotonic() when the running job's queue timeout strikes.
_deadline = math.inf


def remember_current_task(sender, func, task, **kwargs) -> None:
    """django-q2's pre_execute signal: keep the task id so the claim can record it."""
    global _current_task_id
    _current_task_id = task.get("id", "")


def connect_worker_signals() -> None:
    pre_execute.connect(remember_current_task, dispatch_uid="queueing.remember_current_task")


def run_job(job_id: int, dispatch_id: str) -> str:
    """Never raises: every outcome is written to the JobRecord, so django-q2 itself never
    retries (its retries would run a job twice)."""
    if not JobRecord.objects.claim(job_id, dispatch_id, current_worker(), _current_task_id):
        return "skipped: not queued for this dispatch"
    global _deadline
    record = JobRecord.objects.get(pk=job_id)
    _deadline = time.monotonic() + get_queue(record.queue).timeout
    try:
        with job_scope(record):
            return _run(record)
    finally:
        _deadline = math.inf


def time_left() -> float:
    """Seconds until the running job's queue timeout ends it (infinite outside a job): a
    job that would wait longer than this ends early and asks to be run again later."""
    return _deadline - time.monotonic()


def _run(record: JobRecord) -> str:
    try:
        func = get_job(record.kind)
    except LookupError as exc:
        return record.record_failure(PermanentError(str(exc)))
    try:
        result = func(*record.args, **record.kwargs)
    except BaseException as exc:  # django-q2's timeout is a SystemExit
        sentry_sdk.capture_exception(exc)  # permanent failures and 429s are dropped: queueing.sentry
        status = record.record_failure(exc)
        level = logging.INFO if status == JobRecord.Status.RETRYING else logging.WARNING
        logger.log(level, "Job %s %s: %s -> %s", record.pk, record.kind, exc, status)
        if not isinstance(exc, Exception):
            raise
        return status
    record.record_success(_summarise(result))
    return JobRecord.Status.SUCCEEDED


def _summarise(result):
    """What a job returns, as JSON the record can hold."""
    return json.loads(json.dumps(result, default=repr))
