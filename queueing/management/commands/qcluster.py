import sys

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
        cluster.start()
        if options.get("run_once"):
            cluster.stop()
            return
        queue = Conf.CLUSTER_NAME
        Housekeeper(queue).run(keep_going=lambda: bool(cluster.is_running) and cluster.sentinel.is_alive())
        if cluster.sentinel.exitcode not in (0, None) and cluster.start_event is not None:
            sys.exit(f"Cluster {queue} ended unexpectedly (sentinel exit code {cluster.sentinel.exitcode})")
