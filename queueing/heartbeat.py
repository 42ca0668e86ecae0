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
