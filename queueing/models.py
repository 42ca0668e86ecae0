import math
import uuid
from datetime import timedelta

from django.db import models
from django.db.models import F
from django.utils import timezone

from queueing import redaction
from queueing.errors import DEFERRED, MAYBE_DONE, PERMANENT, RATE_LIMITED, RETRIABLE, classify
from queueing.queues import get_queue

LOST = "lost"


class JobQuerySet(models.QuerySet):
    def in_queue(self, queue: str) -> "JobQuerySet":
        return self.filter(queue=queue)

    def failed(self) -> "JobQuerySet":
        return self.filter(status=JobRecord.Status.FAILED)

    def finished(self) -> "JobQuerySet":
        return self.filter(status__in=JobRecord.FINISHED)

    def of_kinds(self, *jobs) -> "JobQuerySet":
        """Records of these @job functions."""
        return self.filter(kind__in=[job.kind for job in jobs])

    def unfinished(self) -> "JobQuerySet":
        return self.exclude(status__in=JobRecord.FINISHED)

    def finished_since(self, moment) -> "JobQuerySet":
        return self.finished().filter(finished_at__gte=moment)

    def first_args(self) -> set:
        """The first argument of each job here (what most jobs are about: an update, a
        broadcast), read in Python: JSON lookups differ between databases."""
        return {args[0] for args in self.values_list("args", flat=True) if args}

    def with_first_arg(self, value) -> "JobQuerySet":
        return self.filter(pk__in=[pk for pk, args in self.values_list("pk", "args") if args and args[0] == value])

    def finished_before(self, moment) -> "JobQuerySet":
        return self.finished().filter(finished_at__lt=moment)

    def waiting(self) -> "JobQuerySet":
        return self.filter(status__in=[JobRecord.Status.QUEUED, JobRecord.Status.RETRYING])

    def due_for_retry(self, now=None) -> "JobQuerySet":
        return self.filter(status=JobRecord.Status.RETRYING, next_retry_at__lte=now or timezone.now())

    def claim(self, job_id: int, dispatch_id: str, worker: str, task_id: str = "") -> bool:
        """queued -> running for the dispatch this task carries. False when another worker got
        there first, the job was cancelled, or this is a stale copy of an older dispatch."""
        return bool(
            self.filter(pk=job_id, status=JobRecord.Status.QUEUED, dispatch_id=dispatch_id).update(
                status=JobRecord.Status.RUNNING,
                attempts=F("attempts") + 1,
                started_at=timezone.now(),
                finished_at=None,
                worker=worker,
                task_id=task_id,
            )
        )

    def cancel(self) -> int:
        return self.waiting().update(status=JobRecord.Status.CANCELLED, finished_at=timezone.now(), next_retry_at=None)

    def not_retried(self) -> "JobQuerySet":
        """Jobs nobody has retried yet: retrying one twice would do its work twice."""
        return self.filter(retried_by__isnull=True)

    def delete_in_batches(self, batch_size: int = 500, batches: int | None = None) -> int:
        """Delete these jobs a batch at a time, each batch its own short transaction, so
        millions of rows never make one huge transaction; at most `batches` batches when
        given. Returns how many were deleted."""
        deleted = 0
        while batches is None or batches > 0:
            batch = list(self.order_by().values_list("pk", flat=True)[:batch_size])
            if not batch:
                break
            # Only the key: the collector would otherwise load every traceback it deletes.
            deleted += JobRecord.objects.filter(pk__in=batch).only("pk").delete()[0]
            batches = None if batches is None else batches - 1
        return deleted


class JobRecord(models.Model):
    """One job in the history: what ran, on which queue, how often, and how it ended."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        RETRYING = "retrying"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    class ErrorClass(models.TextChoices):
        RATE_LIMITED = RATE_LIMITED, "rate limited"
        DEFERRED = DEFERRED, "waiting"
        RETRIABLE = RETRIABLE, "retriable"
        MAYBE_DONE = MAYBE_DONE, "no answer (may have taken effect)"
        PERMANENT = PERMANENT, "permanent"
        LOST = LOST, "lost (worker died)"

    FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)

    queue = models.CharField(max_length=32)
    kind = models.CharField(max_length=200)
    label = models.CharField(max_length=300, blank=True, help_text="What the job is about, for people.")
    args = models.JSONField(default=list, blank=True)
    kwargs = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    attempts = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=1)
    error_class = models.CharField(max_length=16, choices=ErrorClass.choices, blank=True)
    last_error = models.TextField(blank=True)
    traceback = models.TextField(blank=True)
    result = models.JSONField(null=True, blank=True)
    enqueued_at = models.DateTimeField(default=timezone.now)
    dispatched_at = models.DateTimeField(
        null=True, blank=True, help_text="When it last went into the broker; empty if the broker was unreachable."
    )
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    next_retry_at = models.DateTimeField(null=True, blank=True)
    dispatch_id = models.UUIDField(default=uuid.uuid4, help_text="Only the task carrying this token may run the job.")
    task_id = models.CharField(max_length=64, blank=True, help_text="django-q2's id of the task that ran it last.")
    worker = models.CharField(max_length=200, blank=True, help_text="host:pid of the worker that ran it last.")
    retry_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="retried_by")

    objects = JobQuerySet.as_manager()

    class Meta:
        ordering = ["-enqueued_at"]
        permissions = [("view_queue_dashboard", "Can view the queue dashboard and its JSON")]
        indexes = [
            models.Index(fields=["queue", "status", "next_retry_at"]),
            models.Index(fields=["status", "finished_at"]),
            models.Index(fields=["kind", "status"]),
            models.Index(fields=["enqueued_at"]),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.kind} ({self.status})"

    @property
    def short_kind(self) -> str:
        return self.kind.rsplit(".", 1)[-1]

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED

    @property
    def runtime(self) -> timedelta | None:
        if self.started_at and self.finished_at:
            return self.finished_at - self.started_at
        return None

    def _running_self(self) -> JobQuerySet:
        return JobRecord.objects.filter(pk=self.pk, status=self.Status.RUNNING, dispatch_id=self.dispatch_id)

    def record_success(self, result) -> None:
        self._running_self().update(
            status=self.Status.SUCCEEDED, result=result, finished_at=timezone.now(), next_retry_at=None
        )

    def record_failure(self, exc: BaseException) -> str:
        """Sort the exception into its class and move the job on: wait out a rate limit or
        another wait without counting the attempt, back off a retriable error while attempts
        remain, fail everything else. Returns the new status."""
        classification = classify(exc)
        now = timezone.now()
        fields = {
            "error_class": classification.error_class,
            "last_error": redaction.describe(exc)[:5000],
            "traceback": redaction.format_traceback(exc)[-20000:],
        }
        if classification.error_class in (RATE_LIMITED, DEFERRED):
            fields.update(
                status=self.Status.RETRYING,
                attempts=F("attempts") - 1,
                next_retry_at=now + timedelta(seconds=classification.retry_after),
            )
        elif classification.error_class == RETRIABLE and self.attempts < self.max_attempts:
            delay = get_queue(self.queue).backoff_delay(self.attempts)
            fields.update(status=self.Status.RETRYING, next_retry_at=now + timedelta(seconds=delay))
        else:
            fields.update(status=self.Status.FAILED, finished_at=now, next_retry_at=None)
        self._running_self().update(**fields)
        return fields["status"]

    def requeue_lost(self, reason: str) -> bool:
        """A worker died with this job or the broker lost it: run it again with the lost
        attempt counted, or fail it when that was the last one."""
        now = timezone.now()
        fields = {"error_class": LOST, "last_error": reason, "traceback": ""}
        if self.status == self.Status.QUEUED:
            fields["attempts"] = F("attempts") + 1
            attempts_used = self.attempts + 1
        else:
            attempts_used = self.attempts
        if attempts_used >= self.max_attempts:
            fields.update(status=self.Status.FAILED, finished_at=now)
        else:
            fields.update(status=self.Status.QUEUED, dispatch_id=uuid.uuid4(), dispatched_at=now)
        changed = JobRecord.objects.filter(pk=self.pk, status=self.status, dispatch_id=self.dispatch_id).update(
            **fields
        )
        if changed and fields["status"] == self.Status.QUEUED:
            self.dispatch_id = fields["dispatch_id"]
            return True
        return False


class ClusterHeartbeat(models.Model):
    """A running qcluster, written by its housekeeper every few seconds and removed when it
    stops: django-q2's own Stat does not say which queue a cluster serves."""

    queue = models.CharField(max_length=32)
    host = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    workers = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField()
    last_seen = models.DateTimeField()

    class Meta:
        ordering = ["queue", "host", "pid"]
        constraints = [models.UniqueConstraint(fields=["host", "pid"], name="one_heartbeat_per_process")]

    def __str__(self) -> str:
        return f"{self.queue} on {self.host}:{self.pid}"


# Upper bounds, in seconds, of the wait and run time histograms (Prometheus' `le`).
TIMING_BUCKETS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, math.inf)


def bucket_fields(prefix: str) -> list[str]:
    return [f"{prefix}_b{i}" for i in range(len(TIMING_BUCKETS))]


class JobSeries(models.Model):
    """Finished jobs of one period, queue, kind, status and error class, with histograms of
    their wait and run times (`wait_b<i>`, `run_b<i>`: jobs in bucket i of TIMING_BUCKETS,
    not cumulative). A bucket is a column so that summing rows is one SQL aggregate."""

    queue = models.CharField(max_length=32)
    kind = models.CharField(max_length=200)
    status = models.CharField(max_length=16)
    error_class = models.CharField(max_length=16, blank=True)
    count = models.PositiveIntegerField(default=0)
    timed = models.PositiveIntegerField(default=0, help_text="Jobs that ran, so have wait and run times.")
    wait_sum = models.FloatField(default=0)
    run_sum = models.FloatField(default=0)
    # One column per bucket of TIMING_BUCKETS (bucket_fields() names them in order).
    wait_b0 = models.PositiveIntegerField(default=0)
    wait_b1 = models.PositiveIntegerField(default=0)
    wait_b2 = models.PositiveIntegerField(default=0)
    wait_b3 = models.PositiveIntegerField(default=0)
    wait_b4 = models.PositiveIntegerField(default=0)
    wait_b5 = models.PositiveIntegerField(default=0)
    wait_b6 = models.PositiveIntegerField(default=0)
    wait_b7 = models.PositiveIntegerField(default=0)
    wait_b8 = models.PositiveIntegerField(default=0)
    wait_b9 = models.PositiveIntegerField(default=0)
    wait_b10 = models.PositiveIntegerField(default=0)
    wait_b11 = models.PositiveIntegerField(default=0)
    wait_b12 = models.PositiveIntegerField(default=0)
    wait_b13 = models.PositiveIntegerField(default=0)
    wait_b14 = models.PositiveIntegerField(default=0)
    wait_b15 = models.PositiveIntegerField(default=0)
    run_b0 = models.PositiveIntegerField(default=0)
    run_b1 = models.PositiveIntegerField(default=0)
    run_b2 = models.PositiveIntegerField(default=0)
    run_b3 = models.PositiveIntegerField(default=0)
    run_b4 = models.PositiveIntegerField(default=0)
    run_b5 = models.PositiveIntegerField(default=0)
    run_b6 = models.PositiveIntegerField(default=0)
    run_b7 = models.PositiveIntegerField(default=0)
    run_b8 = models.PositiveIntegerField(default=0)
    run_b9 = models.PositiveIntegerField(default=0)
    run_b10 = models.PositiveIntegerField(default=0)
    run_b11 = models.PositiveIntegerField(default=0)
    run_b12 = models.PositiveIntegerField(default=0)
    run_b13 = models.PositiveIntegerField(default=0)
    run_b14 = models.PositiveIntegerField(default=0)
    run_b15 = models.PositiveIntegerField(default=0)

    class Meta:
        abstract = True


class JobMinute(JobSeries):
    """One minute of finished jobs. The dashboard, metrics and reports sum these in the
    database instead of reading the history; kept for queueing.stats.MINUTE_ROWS_KEPT."""

    minute = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["minute", "queue"])]

    def __str__(self) -> str:
        return f"{self.minute:%Y-%m-%d %H:%M} {self.queue} {self.kind} {self.status}: {self.count}"


class JobHour(JobSeries):
    """One whole hour of finished jobs, summed from its JobMinute rows once the roll-up has
    passed the hour: a 24-hour window reads 24 of these per series instead of 1,440.
    Kept for queueing.stats.HOUR_ROWS_KEPT."""

    hour = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["hour", "queue"])]

    def __str__(self) -> str:
        return f"{self.hour:%Y-%m-%d %H}h {self.queue} {self.kind} {self.status}: {self.count}"


class JobTotal(models.Model):
    """Finished jobs since statistics began, per queue, kind and status: Prometheus counters
    that never go down when old history is pruned."""

    queue = models.CharField(max_length=32)
    kind = models.CharField(max_length=200)
    status = models.CharField(max_length=16)
    count = models.PositiveBigIntegerField(default=0)
    timed = models.PositiveBigIntegerField(default=0)
    run_sum = models.FloatField(default=0)
    # One column per bucket of TIMING_BUCKETS, as in JobSeries.
    run_b0 = models.PositiveBigIntegerField(default=0)
    run_b1 = models.PositiveBigIntegerField(default=0)
    run_b2 = models.PositiveBigIntegerField(default=0)
    run_b3 = models.PositiveBigIntegerField(default=0)
    run_b4 = models.PositiveBigIntegerField(default=0)
    run_b5 = models.PositiveBigIntegerField(default=0)
    run_b6 = models.PositiveBigIntegerField(default=0)
    run_b7 = models.PositiveBigIntegerField(default=0)
    run_b8 = models.PositiveBigIntegerField(default=0)
    run_b9 = models.PositiveBigIntegerField(default=0)
    run_b10 = models.PositiveBigIntegerField(default=0)
    run_b11 = models.PositiveBigIntegerField(default=0)
    run_b12 = models.PositiveBigIntegerField(default=0)
    run_b13 = models.PositiveBigIntegerField(default=0)
    run_b14 = models.PositiveBigIntegerField(default=0)
    run_b15 = models.PositiveBigIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["queue", "kind", "status"], name="one_total_per_series")]

    def __str__(self) -> str:
        return f"{self.queue} {self.kind} {self.status}: {self.count}"


class RollupCursor(models.Model):
    """Jobs of a queue that finished before `rolled_until` are counted in JobMinute and JobTotal;
    the whole hours before it in JobHour."""

    queue = models.CharField(max_length=32, primary_key=True)
    rolled_until = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.queue} rolled up until {self.rolled_until:%Y-%m-%d %H:%M}"


class RateLimitBucket(models.Model):
    """The database backend of queueing.ratelimit: one send-slot timeline per key."""

    key = models.CharField(max_length=200, primary_key=True)
    tat = models.FloatField(default=0.0, help_text="When the key's next free send slot starts (Unix time).")
    throttled = models.PositiveBigIntegerField(default=0, help_text="Telegram's 429 answers for this key so far.")

    def __str__(self) -> str:
        return self.key


class Departure(models.Model):
    """The database backend of queueing.departures: when a message of a key (a bot) left; a
    place in the window a sender holds for messages it will send before it records them; or
    a sender waiting for room, so that a sender that holds places learns it must give them up."""

    class Kind(models.TextChoices):
        LEFT = "left"
        HELD = "held"
        WAITING = "waiting"

    key = models.CharField(max_length=200)
    sender = models.CharField(max_length=100, help_text="Replies, or one broadcast sender.")
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.LEFT)
    at = models.FloatField(help_text="When it left, until when the place is held, or when it waited (Unix time).")

    class Meta:
        indexes = [models.Index(fields=["key", "at"])]

    def __str__(self) -> str:
        return f"{self.key} {self.sender} {self.kind} at {self.at:.3f}"


class Circuit(models.Model):
    """A service that stopped answering (Telegram for one bot), shared by every process:
    while it is open, work that needs the service waits instead of spending attempts, and
    one probe at a time checks whether it is back. No row: closed."""

    key = models.CharField(max_length=200, primary_key=True)
    opened_at = models.DateTimeField(help_text="When the outage was first seen.")
    probe_at = models.DateTimeField(help_text="When the next probe may go out.")
    probing_until = models.DateTimeField(null=True, blank=True, help_text="A probe is out until then.")
    failures = models.PositiveIntegerField(default=1)
    reason = models.CharField(max_length=300, blank=True)

    def __str__(self) -> str:
        return f"{self.key} open since {self.opened_at:%Y-%m-%d %H:%M:%S}"


class AlertQuerySet(models.QuerySet):
    def active(self) -> "AlertQuerySet":
        return self.filter(resolved_at__isnull=True)


class Alert(models.Model):
    """One episode of a crossed threshold (a red banner of the dashboard), from when it was
    first seen until it cleared: what queueing.alerts has told the operators about it. The
    database is the one place every evaluating process agrees on, so nothing is sent twice."""

    key = models.CharField(max_length=100, help_text="The health check's name, e.g. cluster:telegram.")
    level = models.CharField(max_length=16, help_text="degraded or down.")
    detail = models.CharField(max_length=300, blank=True)
    raised_at = models.DateTimeField(help_text="When the problem was first seen.")
    last_notified_at = models.DateTimeField(
        null=True, blank=True, help_text="When operators were last told; empty while it is pending."
    )
    notifications = models.PositiveIntegerField(default=0, help_text="Messages sent about it, reminders included.")
    clear_since = models.DateTimeField(null=True, blank=True, help_text="Seen clear since; it resolves after a while.")
    resolved_at = models.DateTimeField(null=True, blank=True)

    objects = AlertQuerySet.as_manager()

    class Meta:
        ordering = ["-raised_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["key"], condition=models.Q(resolved_at__isnull=True), name="one_active_alert_per_key"
            )
        ]

    def __str__(self) -> str:
        state = "resolved" if self.resolved_at else "active"
        return f"{self.key} ({state}, raised {self.raised_at:%Y-%m-%d %H:%M})"
