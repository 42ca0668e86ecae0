from django.apps import AppConfig
from django.db.models.signals import post_delete, post_migrate, post_save
from django_q.conf import Conf


class BotsConfig(AppConfig):
    name = "bots"
    verbose_name = "Telegram bots"

    def ready(self) -> None:
        # Imported here: these modules define or use models, which load after the app configs.
        from bots import alert_sender, download_requests, handlers, inbox
        from bots.downloads import folders, ytdlp
        from bots.models import Bot, Download, Update
        from bots.signals import sync_settings_bot
        from bots.tasks import download_media, handle_update
        from queueing import alerts, redaction
        from queueing.housekeeping import register_duty
        from queueing.jobs import first_arg_is, register_arg_describer

        post_migrate.connect(sync_settings_bot, sender=self)
        redaction.register_secrets(Bot.objects.secrets)
        for signal in (post_save, post_delete):
            signal.connect(redaction.forget, sender=Bot)
        alerts.senders.register("telegram", alert_sender.send_alert)
        register_arg_describer(handle_update, first_arg_is(Update))
        register_arg_describer(download_media, first_arg_is(Download))
        register_duty("telegram", inbox.DISPATCH_INTERVAL, inbox.dispatch_received)
        register_duty("telegram", inbox.ORPHAN_INTERVAL, inbox.hand_on_orphans)
        register_duty("downloads", folders.SWEEP_INTERVAL, folders.sweep_stale_folders)
        handlers.answers.register(handlers.LINK, download_requests.answer_link)
        if Conf.CLUSTER_NAME == "downloads":
            # Its workers are forked from this process: prepare yt-dlp once here, not in
            # every fresh worker's first download (about 1.5 s).
            ytdlp.warm_up()
