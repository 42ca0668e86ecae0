from django.apps import AppConfig


class BroadcastsConfig(AppConfig):
    name = "broadcasts"
    verbose_name = "Pledges and broadcasts"

    def ready(self) -> None:
        from broadcasts import recovery
        from broadcasts.observability import active_broadcasts, broadcast_outcomes
        from queueing.dashboard import register_panel
        from queueing.housekeeping import register_duty
        from queueing.report import register_report_section

        register_duty("telegram", recovery.RECOVERY_INTERVAL, recovery.resume_stranded)
        register_report_section("broadcasts", broadcast_outcomes)
        register_panel(
            "active_broadcasts",
            active_broadcasts,
            title="Active broadcasts",
            template="admin/broadcasts/active_broadcasts_panel.html",
        )
