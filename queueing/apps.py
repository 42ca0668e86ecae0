from django.apps import AppConfig
from django.conf import settings


class QueueingConfig(AppConfig):
    name = "queueing"
    verbose_name = "Queues and jobs"

    def ready(self) -> None:
        # Imported here: these modules use the models, which load after the app configs.
        from queueing import alerts, history, runner, stats
        from queueing.housekeeping import register_duty

        runner.connect_worker_signals()
        # The default cluster always runs: it tells operators of crossed thresholds, rolls up
        # the statistics of queues whose cluster is stopped and prunes the job history.
        # getattr: queueing may run under settings of its own, without the platform's.
        register_duty("default", getattr(settings, "ALERT_EVALUATE_SECONDS", 10.0), alerts.evaluate_duty)
        register_duty("default", 30.0, stats.roll_up_lagging)
        register_duty("default", history.PRUNE_INTERVAL, history.prune_duty)
