from django.apps import AppConfig
from django.conf import settings


class QueueingConfig(AppConfig):
    name = "queueing"
    verbose_name = "Queues and jobs"

    def ready(self) -> None:
        from queueing import alerts, jobs
        from queueing.housekeeping import register_duty
        from queueing.stats import roll_up_lagging

        jobs.connect_worker_signals()
        # The default cluster always runs (schedules): it tells operators of crossed
        # thresholds, and rolls up the statistics of queues whose cluster is stopped.
        register_duty("default", getattr(settings, "ALERT_EVALUATE_SECONDS", 10.0), alerts.evaluate_duty)
        register_duty("default", 30.0, roll_up_lagging)
