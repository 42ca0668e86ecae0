"""Housekeeping for one queue, run by its qcluster's main process about twice a second:
django-q2's scheduler ticks only every 30 s, too coarse for a 5 s backoff."""

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from queueing.heartbeat import Heartbeat, alive_clusters
from queueing.jobs import dispatch, redispatch
from queueing.models import JobRecord
from queueing.queues import dispatch_ids_in_broker, get_queue
from queueing.registry import Registry
from queueing.stats import roll_up

logger = logging.getLogger(__name__)

UNDISPATCHED_GRACE = timedelta(seconds=2)
# A worker may overrun its timeout by a few seconds before django-q2's guard kills it.
TIMEOUT_GRACE = timedelta(seconds=5)


def promote_due_retries(queue: str) -> int:
    return sum(redispatch(record) for record in JobRecord.objects.in_queue(queue).due_for_retry())


def dispatch_undispatched(queue: str) -> int:
    """Jobs enqueued while the broker was unreachable."""
    stale = JobRecord.objects.in_queue(queue).filter(
        status=JobRecord.Status.QUEUED,
        dispatched_at__isnull=True,
        enqueued_at__lt=timezone.now() - UNDISPATCHED_GRACE,
    )
    return sum(redispatch(record) for record in stale)


def recover_dead_workers(queue: str) -> int:
    """Running jobs whose worker is gone: a dead pid on this machine, a worker of another
    machine none of whose clusters of the queue has beaten lately (the machine died, or lost
    power), or past the queue's timeout on any machine."""
    spec = get_queue(queue)
    overdue = timezone.now() - timedelta(seconds=spec.timeout) - TIMEOUT_GRACE
    running = list(JobRecord.objects.in_queue(queue).filter(status=JobRecord.Status.RUNNING))
    # Read after the jobs: a cluster beats before it takes its first job (queueing's qcluster).
    machines_alive = set(alive_clusters(queue).values_list("host", flat=True)) if running else set()
    recovered = 0
    for record in running:
        if _worker_is_dead(record.worker, machines_alive):
            reason = f"Worker {record.worker} died during attempt {record.attempts}"
        elif record.started_at and record.started_at < overdue:
            reason = f"Worker {record.worker} overran the {spec.timeout} s timeout in attempt {record.attempts}"
        else:
            continue
        logger.warning("Job %s: %s", record.pk, reason)
        recovered += _requeue_lost(record, reason)
    return recovered


# dispatch token -> when this process first saw its queued job missing from the broker.
_missing_since: dict[str, float] = {}


def recover_lost_jobs(queue: str) -> int:
    """Queued jobs that are in no broker any more: a cluster killed with tasks it had
    already taken. A task a live cluster has taken but not yet started (its prefetch) is
    missing from the broker too, but only until a worker is free: within the queue's
    timeout. So a job counts as lost only once it has been missing for longer than that."""
    spec = get_queue(queue)
    patience = spec.timeout + TIMEOUT_GRACE.total_seconds()
    candidates = list(
        JobRecord.objects.in_queue(queue).filter(
            status=JobRecord.Status.QUEUED, dispatched_at__lt=timezone.now() - timedelta(seconds=patience)
        )
    )
    present = dispatch_ids_in_broker(queue) if candidates else set()
    missing = {str(record.dispatch_id) for record in candidates} - present
    for token in set(_missing_since) - missing:
        del _missing_since[token]
    now = time.monotonic()
    recovered = 0
    for record in candidates:
        token = str(record.dispatch_id)
        if token in missing and now - _missing_since.setdefault(token, now) >= patience:
            del _missing_since[token]
            recovered += _requeue_lost(record, f"Lost from the broker after attempt {record.attempts}")
    return recovered


def recover_prefetched(queue: str) -> int:
    """Called by a cluster before it takes its first task. django-q2 takes tasks from the
    broker ahead of its workers (queue_limit), so a queued job that is in no broker was taken
    by a cluster of the queue: when no other cluster of the queue is alive, by one that died
    before starting it. It is dispatched again now, not after recover_lost_jobs' patience,
    and spends no attempt: it never started (were its old task still somewhere, its stale
    token would not run it)."""
    if _other_clusters_alive(queue):
        return 0
    waiting = JobRecord.objects.in_queue(queue).filter(
        status=JobRecord.Status.QUEUED,
        # The grace: a job whose dispatch is being pushed right now is in no broker yet.
        dispatched_at__lt=timezone.now() - UNDISPATCHED_GRACE,
    )
    # Only the tokens: a backlog of many thousand jobs is not loaded to find a few.
    tokens = {str(token) for token in waiting.values_list("dispatch_id", flat=True)}
    missing = tokens - dispatch_ids_in_broker(queue) if tokens else set()
    lost = list(waiting.filter(dispatch_id__in=missing))
    for record in lost:
        logger.warning("Job %s: taken from the broker by a cluster that died before starting it", record.pk)
    return sum(redispatch(record) for record in lost)


def _other_clusters_alive(queue: str) -> bool:
    """Whether a cluster of the queue other than this process beats: on another machine
    lately, on this one lately and with its process still there (a killed cluster's
    heartbeat stays fresh for HEARTBEAT_TIMEOUT)."""
    here, me = settings.MACHINE_NAME, os.getpid()
    return any(
        host != here or (pid != me and not _process_is_dead(pid))
        for host, pid in alive_clusters(queue).values_list("host", "pid")
    )


def _requeue_lost(record: JobRecord, reason: str) -> bool:
    return record.requeue_lost(reason) and dispatch(record)


def _worker_is_dead(worker: str, machines_alive: set[str]) -> bool:
    machine, _, pid = worker.rpartition(":")
    if machine != settings.MACHINE_NAME:
        return bool(machine) and machine not in machines_alive
    return pid.isdigit() and _process_is_dead(int(pid))


def _process_is_dead(pid: int) -> bool:
    """A process of this machine; one of another user's is taken for alive."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


Duty = Callable[[str], int]


@dataclass(frozen=True)
class RegisteredDuty:
    cluster: str
    interval: float
    run: Duty


# Duties apps hang on a cluster from their AppConfig.ready(); a duty is called with the
# cluster's name and returns how much it did.
duties: Registry[RegisteredDuty] = Registry("housekeeping duty")


def register_duty(cluster: str, interval: float, duty: Duty) -> None:
    """Run `duty` every `interval` seconds in the main process of every `cluster` qcluster
    ("default" is the cluster that serves no queue of its own). Duties that must run in one
    place at a time take a lock (queueing.locks.try_lock) themselves. The periodic work of
    the platform is all duties: there are no django-q2 Schedules and no cron jobs."""
    duties.register(f"{cluster}:{duty.__module__}.{duty.__qualname__}", RegisteredDuty(cluster, interval, duty))


class Housekeeper:
    """Runs each duty at its own interval; a failing duty (broker or database briefly
    away) is logged and tried again next time, never ends the loop. The default cluster
    (no queue of its own) runs only its heartbeat and the registered duties."""

    TICK = 0.25

    def __init__(self, queue: str):
        self.queue = queue
        self.heartbeat = Heartbeat()
        self.duties: list[tuple[float, Duty]] = [(Heartbeat.INTERVAL, self.heartbeat.beat)]
        if queue in settings.QUEUES:
            self.duties += [
                (0.5, promote_due_retries),
                (2.0, dispatch_undispatched),
                (2.0, recover_dead_workers),
                (10.0, recover_lost_jobs),
                (10.0, roll_up),
            ]
        self.duties += [(duty.interval, duty.run) for duty in duties.values() if duty.cluster == queue]
        self.tick_seconds = min([self.TICK, *(interval for interval, _ in self.duties)])
        self.next_run = {duty: 0.0 for _, duty in self.duties}
        # Duties that failed last time: a database that is down for a minute must not
        # log a traceback from every 50 ms duty.
        self.failing: set[Duty] = set()

    def tick(self) -> None:
        now = time.monotonic()
        for interval, duty in self.duties:
            if now < self.next_run[duty]:
                continue
            self.next_run[duty] = now + interval
            self._run(duty)

    def _run(self, duty: Duty) -> None:
        close_old_connections()
        try:
            duty(self.queue)
        except Exception:
            if duty not in self.failing:
                self.failing.add(duty)
                logger.exception(
                    "Housekeeping %s for queue %s failed; retrying quietly until it works", duty.__name__, self.queue
                )
            return
        if duty in self.failing:
            self.failing.discard(duty)
            logger.warning("Housekeeping %s for queue %s works again", duty.__name__, self.queue)

    def beat(self) -> None:
        """Before the cluster takes its first job: another machine takes the jobs of a machine
        whose clusters do not beat for lost (recover_dead_workers)."""
        self._run(self.heartbeat.beat)

    def before_start(self) -> None:
        """Before the cluster takes its first job: beat, and run again the jobs a killed
        cluster of the queue took and never started (recover_prefetched). Those it was running
        are recovered by the first tick (recover_dead_workers)."""
        self.beat()
        if self.queue in settings.QUEUES:
            self._run(recover_prefetched)

    def run(self, keep_going: Callable[[], bool]) -> None:
        while keep_going():
            self.tick()
            time.sleep(self.tick_seconds)

    def beat_while(self, stop: Callable[[], object]) -> None:
        """Call `stop` (the cluster's: its running jobs finish first, up to the queue's timeout)
        while beating on, then remove the heartbeat: a machine that stopped beating before its
        jobs ended would have them run again elsewhere."""
        stopping = threading.Thread(target=stop, name="cluster-stop")
        stopping.start()
        while stopping.is_alive():
            self._run(self.heartbeat.beat)
            stopping.join(Heartbeat.INTERVAL)
        close_old_connections()
        self.heartbeat.stop()
