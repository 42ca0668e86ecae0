from django.apps import AppConfig


class QueueingConfig(AppConfig):
    name = "queueing"
    verbose_name = "Queues and jobs"

    def ready(self) -> None:
        from queueing import jobs

        jobs.connect_worker_signals()
