import signal
import sys
import threading

from django.core.management.base import CommandError
from django_q.cluster import Cluster
from django_q.conf import Conf
from django_q.management.commands.qcluster import Command as DjangoQCommand

from queueing.housekeeping import Housekeeper


class Command(DjangoQCommand):
    help = (
        "Starts the django-q2 cluster named by Q_CLUSTER_NAME (a queue of settings.QUEUES, or the "
        "default cluster for schedules) and runs that queue's housekeeping in this process."
    )

    def handle(self, *args, **options):
        if options.get("cluster_name"):
            raise CommandError("Choose the queue with the environment: Q_CLUSTER_NAME=telegram manage.py qcluster")
        cluster = Cluster()
        stop_requested = _stop_between_ticks()
        queue = Conf.CLUSTER_NAME
        housekeeper = Housekeeper(queue)
        housekeeper.before_start()
        cluster.start()
        if options.get("run_once"):
            housekeeper.beat_while(cluster.stop)
            return
        housekeeper.run(keep_going=lambda: not stop_requested.is_set() and cluster.sentinel.is_alive())
        housekeeper.beat_while(cluster.stop)
        if cluster.sentinel.exitcode not in (0, None) and cluster.start_event is not None:
            sys.exit(f"Cluster {queue} ended unexpectedly (sentinel exit code {cluster.sentinel.exitcode})")


def _stop_between_ticks() -> threading.Event:
    """SIGTERM and SIGINT only ask the housekeeping loop to stop the cluster after its tick.
    django-q2's own handler stops the cluster inside the signal handler, wherever this thread
    was: in a housekeeping transaction, SQLite's write lock stayed held while the workers
    finished, so their last writes waited out the busy timeout (20 s) and then failed."""
    requested = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: requested.set())
    return requested
