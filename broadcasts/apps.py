from django.apps import AppConfig


class BroadcastsConfig(AppConfig):
    name = "broadcasts"
    verbose_name = "Pledges and broadcasts"

    def ready(self) -> None:
        from broadcasts import recovery, variants
        from broadcasts.models import Broadcast
        from broadcasts.observability import active_broadcasts, broadcast_outcomes
        from broadcasts.tasks import send_chunk, send_due_winners, start_broadcast
        from queueing.dashboard import register_panel
        from queueing.housekeeping import register_duty
        from queueing.jobs import first_arg_is, register_arg_describer
        from queueing.report import register_report_section

        register_duty("telegram", recovery.RECOVERY_INTERVAL, recovery.resume_stranded)
        register_duty("telegram", variants.WINNER_INTERVAL, send_due_winners)
        register_report_section("broadcasts", broadcast_outcomes)
        for task in (start_broadcast, send_chunk):
            register_arg_describer(task, first_arg_is(Broadcast))
        register_panel(
            "active_broadcasts",
            active_broadcasts,
            title="Active broadcasts",
            template="admin/broadcasts/active_broadcasts_panel.html",
        )
