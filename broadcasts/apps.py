from django.apps import AppConfig


class BroadcastsConfig(AppConfig):
    name = "broadcasts"
    verbose_name = "Pledges and broadcasts"

    def ready(self) -> None:
        # Imported here: these modules use the models, which load after the app configs.
        from bots import handlers
        from broadcasts import bot_commands, delivery_counts, observability, recovery, tasks, unsubscribe, variants
        from broadcasts.models import Broadcast, Pledge
        from queueing import metrics
        from queueing.dashboard import register_panel
        from queueing.housekeeping import register_duty
        from queueing.jobs import first_arg_is, register_arg_describer
        from queueing.report import register_report_section

        handlers.answers.register("/pledge", bot_commands.pledge)
        handlers.presses.register(unsubscribe.PREFIX, unsubscribe.press_stop)
        handlers.starting.register("attach pledges", Pledge.objects.attach_to)
        register_duty("telegram", recovery.RECOVERY_INTERVAL, recovery.resume_stranded)
        register_duty("default", tasks.DUE_INTERVAL, tasks.start_due_broadcasts)
        register_duty("telegram", variants.WINNER_INTERVAL, tasks.send_due_winners)
        register_duty("telegram", delivery_counts.FOLD_INTERVAL, delivery_counts.fold)
        register_report_section("broadcasts", observability.broadcast_outcomes)
        metrics.collectors.register("broadcasts", observability.delivery_metrics)
        for task in (tasks.start_broadcast, tasks.send_deliveries):
            register_arg_describer(task, first_arg_is(Broadcast))
        register_panel(
            "active_broadcasts",
            observability.active_broadcasts,
            title="Active broadcasts",
            template="admin/broadcasts/active_broadcasts_panel.html",
        )
