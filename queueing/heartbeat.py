"""Each qcluster says which queue it serves and that it is alive: its housekeeper writes a
ClusterHeartbeat row every few seconds and deletes it on a graceful stop. A cluster whose
row is older than HEARTBEAT_TIMEOUT is taken for dead (killed, or its machine is gone)."""

import os
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone
from django_q.conf import Conf

from queueing.models import ClusterHeartbeat


class Heartbeat:
    INTERVAL = 2.0

    def __init__(self):
        self.workers = Conf.WORKERS
        self.host = settings.MACHINE_NAME
        self.pid = os.getpid()
        self.started_at = timezone.now()

    def beat(self, queue: str) -> int:
        ClusterHeartbeat.objects.update_or_create(
            host=self.host,
            pid=self.pid,
            defaults={
                "queue": queue,
                "workers": self.workers,
                "started_at": self.started_at,
                "last_seen": timezone.now(),
            },
        )
        return 1

    def stop(self) -> None:
        ClusterHeartbeat.objects.filter(host=self.host, pid=self.pid).delete()


def alive_since() -> datetime:
    return timezone.now() - timedelta(seconds=settings.HEARTBEAT_TIMEOUT)


def alive_clusters(queue: str | None = None):
    clusters = ClusterHeartbeat.objects.filter(last_seen__gte=alive_since())
    return clusters.filter(queue=queue) if queue else clusters


def machines_gone() -> set[str]:
    """Machines that have heartbeat rows, none of them fresh: every cluster they ran was
    killed, or the machine itself is gone. (A machine whose clusters all stopped gracefully
    left no rows.)"""
    last_seen: dict[str, datetime] = {}
    for machine, seen in ClusterHeartbeat.objects.values_list("host", "last_seen"):
        last_seen[machine] = max(seen, last_seen.get(machine, seen))
    since = alive_since()
    return {machine for machine, seen in last_seen.items() if seen < since}
