"""The job contract: declare a job with @job, enqueue it with enqueue(); every task of
the platform goes through here, so every task has a JobRecord."""

import logging
import time
import uuid
from collections.abc import Callable, Iterable
from importlib import import_module

from django.apps import apps
from django.conf import settings
from django.db import transaction
from django.urls import reverse
from django.utils import timezone
from django_q.tasks import async_task

from queueing.models import JobQuerySet, JobRecord
from queueing.queues import broker_for, broker_shares_the_database, get_queue
from queueing.registry import Registry

logger = logging.getLogger(__name__)

RUNNER = "queueing.runner.run_job"


class Job:
    """A function that runs on a queue. Calling it runs it here and now;
    `.enqueue(...)` runs it on its queue."""

    def __init__(self, func: Callable, queue: str, max_attempts: int | None):
        get_queue(queue)  # fail at import time on a typo
        self.func = func
        self.queue = queue
        self.max_attempts = max_attempts
        self.kind = f"{func.__module__}.{func.__qualname__}"
        self.__doc__ = func.__doc__

    def __call__(self, *args, **kwargs):
        return self.func(*args, **kwargs)

    @property
    def attempt_budget(self) -> int:
        """How many times a unit of this job's work is tried: the queue's retries + 1
        unless the job says otherwise. Work that keeps its own attempts (an update, a
        delivery) uses this same number."""
        return self.max_attempts or get_queue(self.queue).max_attempts

    def enqueue(self, *args, **kwargs) -> JobRecord:
        return enqueue(self, args, kwargs)

    def enqueue_with(self, args: Iterable = (), kwargs: dict | None = None, **options) -> JobRecord:
        """Enqueue with options of `enqueue()`: label, queue, on_dispatch_failure..."""
        return enqueue(self, args, kwargs, **options)

    def __repr__(self) -> str:
        return f"<Job {self.kind} on {self.queue}>"


jobs_by_kind: Registry[Job] = Registry("job")


def job(queue: str, max_attempts: int | None = None) -> Callable[[Callable], Job]:
    """Declare a job. `max_attempts` defaults to the queue's retries + 1."""

    def register(func: Callable) -> Job:
        declared = Job(func, queue, max_attempts)
        return jobs_by_kind.register(declared.kind, declared)

    return register


def get_job(kind: str) -> Job:
    """The registered job for a kind, importing its module if this process has not yet."""
    if kind not in jobs_by_kind:
        module = kind.rpartition(".")[0]
        allowed = _job_modules()
        if module not in allowed:
            raise LookupError(f"{kind!r} is not in an app's tasks module or QUEUEING_JOB_MODULES")
        import_module(module)
    try:
        return jobs_by_kind[kind]
    except KeyError:
        raise LookupError(f"{kind!r} is not a @job") from None


def job_kinds() -> list[str]:
    """Every declared job's kind, importing each app's tasks module that exists."""
    for module in _job_modules():
        try:
            import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
    return sorted(jobs_by_kind)


# describer(args, kwargs) returning [(label, admin url)] for what a kind's arguments are.
ArgDescriber = Callable[[list, dict], list[tuple[str, str]]]
arg_describers: Registry[ArgDescriber] = Registry("job argument describer")


def register_arg_describer(kind_or_job: "str | Job", describer: ArgDescriber) -> None:
    """Let the job history show a kind's arguments as links to what they are (an update, a
    broadcast...). Apps call this from AppConfig.ready(), so queueing imports none of them."""
    arg_describers.register(kind_or_job if isinstance(kind_or_job, str) else kind_or_job.kind, describer)


def first_arg_is(model: type) -> ArgDescriber:
    """A describer for jobs whose first argument is the primary key of a `model` row: a link
    to its admin change page, labelled with the row (or saying it is gone)."""

    def describe(args: list, kwargs: dict) -> list[tuple[str, str]]:
        row = model._default_manager.filter(pk=args[0]).first() if args else None
        name = model._meta.verbose_name
        if row is None:
            return [(f"{name} {args[0] if args else '?'} (deleted)", "")]
        url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_change", args=[row.pk])
        return [(f"{name.capitalize()}: {row}", url)]

    return describe


def describe_args(record: JobRecord) -> list[tuple[str, str]]:
    """(label, url) for each thing a job's arguments point at; empty when its kind has no
    describer or the describer fails (the raw arguments are shown then)."""
    describer = arg_describers.get(record.kind)
    if describer is None:
        return []
    try:
        return describer(list(record.args or []), dict(record.kwargs or {}))
    except Exception:  # a deleted row or odd arguments must not break the job's page
        logger.exception("Describing the arguments of job %s failed", record.pk)
        return []


def _job_modules() -> set[str]:
    return {f"{config.name}.tasks" for config in apps.get_app_configs()} | set(settings.QUEUEING_JOB_MODULES)


def enqueue(
    target: Job,
    args: Iterable = (),
    kwargs: dict | None = None,
    *,
    queue: str | None = None,
    label: str = "",
    retry_of: JobRecord | None = None,
    on_dispatch_failure: Callable[[], None] | None = None,
) -> JobRecord:
    """Record the job and hand it to django-q2.

    With the ORM broker the task is written in the caller's transaction, so record and task
    commit together. With Redis the push waits for the commit, so a worker never looks for a
    record it cannot see yet; if Redis is unreachable the record stays queued,
    `on_dispatch_failure` is called, and housekeeping dispatches the job later."""
    queue = queue or target.queue
    spec = get_queue(queue)
    record = JobRecord.objects.create(
        queue=queue,
        kind=target.kind,
        label=label[:300],
        args=list(args),
        kwargs=kwargs or {},
        max_attempts=target.max_attempts or spec.max_attempts,
        dispatched_at=timezone.now(),
        retry_of=retry_of,
    )
    if broker_shares_the_database(queue):
        _push(record)
    else:
        transaction.on_commit(lambda: dispatch(record, on_dispatch_failure))
    return record


def _push(record: JobRecord) -> None:
    async_task(
        RUNNER,
        record.pk,
        str(record.dispatch_id),
        cluster=record.queue,
        broker=broker_for(record.queue),
        ack_failure=True,
        task_name=f"job-{record.pk}-{record.dispatch_id.hex[:8]}",
    )


def dispatch(record: JobRecord, on_failure: Callable[[], None] | None = None) -> bool:
    """Push the record's current dispatch to its queue's broker."""
    try:
        _push(record)
    except Exception:
        _broker_outages.failed(record)
        JobRecord.objects.filter(pk=record.pk, dispatch_id=record.dispatch_id).update(dispatched_at=None)
        if on_failure:
            on_failure()
        return False
    _broker_outages.worked(record.queue)
    return True


class BrokerOutages:
    """Logs a broker outage once when it starts (with the traceback), a line a minute while
    it lasts, and once when it ends: not a traceback per job every few seconds."""

    SUMMARY_EVERY = 60.0

    def __init__(self):
        # queue -> [since, last summary, jobs kept back since the last line]
        self.down: dict[str, list[float]] = {}

    def failed(self, record: JobRecord) -> None:
        now = time.monotonic()
        outage = self.down.get(record.queue)
        if outage is None:
            self.down[record.queue] = [now, now, 0]
            logger.exception(
                "Broker of queue %s unreachable: jobs (the first: %s) stay queued until housekeeping dispatches them",
                record.queue,
                record.pk,
            )
            return
        outage[2] += 1
        if now - outage[1] >= self.SUMMARY_EVERY:
            logger.warning(
                "Broker of queue %s still unreachable after %.0f s; %d more jobs kept queued",
                record.queue,
                now - outage[0],
                outage[2],
            )
            outage[1], outage[2] = now, 0

    def worked(self, queue: str) -> None:
        if outage := self.down.pop(queue, None):
            logger.warning("Broker of queue %s reachable again after %.0f s", queue, time.monotonic() - outage[0])


_broker_outages = BrokerOutages()


def redispatch(record: JobRecord) -> bool:
    """queued (undispatched) or due retrying -> queued with a fresh dispatch, then pushed.
    The conditional update makes sure only one housekeeper does it."""
    token = uuid.uuid4()
    changed = JobRecord.objects.filter(pk=record.pk, status=record.status, dispatch_id=record.dispatch_id).update(
        status=JobRecord.Status.QUEUED, dispatch_id=token, dispatched_at=timezone.now()
    )
    if not changed:
        return False
    record.status, record.dispatch_id = JobRecord.Status.QUEUED, token
    return dispatch(record)


def retry(record: JobRecord) -> JobRecord:
    """Run a finished job again as a new job that links to it."""
    return enqueue(
        get_job(record.kind), record.args, record.kwargs, queue=record.queue, label=record.label, retry_of=record
    )


def retry_all(jobs: JobQuerySet) -> int:
    """Run each of `jobs` that nobody has retried yet again, as a new job linked to it.
    Each original is locked while its retry is made and checked again under the lock, so
    two operators retrying at once never both retry it. Jobs whose kind is no longer a @job
    are skipped. Returns how many were retried."""
    retried = 0
    for pk in list(jobs.not_retried().order_by().values_list("pk", flat=True)):
        with transaction.atomic():
            original = JobRecord.objects.select_for_update().filter(pk=pk).first()
            if original is None or original.retried_by.exists():
                continue
            try:
                retry(original)
            except LookupError as exc:
                logger.warning("Job %s not retried: %s", pk, exc)
                continue
        retried += 1
    return retried
