"""The download job, on the `downloads` queue: one member's link, downloaded with yt-dlp in a
folder of its own and sent back through the Bot API, the member's progress message kept up
to date. bots.tasks.download_media runs it."""

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

from django.utils import translation

from bots.downloads import messages
from bots.downloads.folders import DiskFull, temporary_folder
from bots.downloads.progress import Progress
from bots.downloads.upload import caption, remember, send_cached, send_media
from bots.downloads.ytdlp import fetch
from bots.languages import language_for
from bots.models import Download
from queueing import history, redaction
from queueing.errors import DEFERRED, MAYBE_DONE, PERMANENT, RATE_LIMITED, Deferred, PermanentError, classify

logger = logging.getLogger(__name__)

# A download waiting for the member's earlier one looks again this often.
TURN_WAIT_SECONDS = 2.0


def run(download_pk: int) -> dict:
    """Deliver the download; the member reads every message about it in their language."""
    download = Download.objects.select_related("bot", "member").get(pk=download_pk)
    with translation.override(language_for(download.member)):
        return deliver(download)


def deliver(download: Download) -> dict:
    """1. If an operator retried the download's job, this newer job takes the download over.
    2. Wait (without using an attempt) while the member's earlier download is still to finish.
    3. Answer from the cache if the link was sent meanwhile.
    4. Download into a fresh folder, upload, remember the file_id, remove the progress message.
    On failure the member's progress message says what went wrong, once no retry is left."""
    bot, clock = download.bot, Stopwatch()
    progress = Progress(bot, download.chat_id, download.message_id)
    if download.follow_retries():
        progress.restart()
    if download.earlier_active().exists():
        raise Deferred(TURN_WAIT_SECONDS, "Waiting for the member's earlier download to finish")
    download.mark(Download.Status.RUNNING)
    try:
        if send_cached(bot, download.chat_id, download.url):
            progress.remove()
            download.mark(Download.Status.SENT, from_cache=True)
            return summary(download, clock)
        with temporary_folder() as folder:
            with clock.phase("download"):
                media = fetch(download.url, folder, progress.update)
            with clock.phase("upload"):
                progress.uploading()
                file_id = send_media(bot, download.chat_id, media.kind, media.path, caption(media.title, download.url))
        remember(bot, download.url, file_id, media.kind, media.title, media.size)
        progress.remove()
        download.mark(Download.Status.SENT, kind=media.kind, size=media.size)
        return summary(download, clock)
    except BaseException as exc:
        fail(download, progress, exc)
        raise


def fail(download: Download, progress: Progress, exc: BaseException) -> None:
    """Tell the member, unless the job will run again."""
    error_class = classify(exc).error_class
    if error_class in (RATE_LIMITED, DEFERRED):
        return
    if error_class == MAYBE_DONE:
        progress.show(messages.MAYBE_SENT)
        download.mark(Download.Status.FAILED, error=redaction.describe(exc)[:5000])
        return
    if isinstance(exc, DiskFull):
        # Permanent errors stay out of Sentry; this one is the operator's to fix.
        logger.error("Download %s: %s", download.pk, exc)
    if error_class != PERMANENT and not history.is_last_attempt(download.job_id):
        progress.show(messages.RETRYING)
        return
    user_message = exc.user_message if isinstance(exc, PermanentError) and exc.user_message else messages.GAVE_UP
    progress.show(user_message)
    download.mark(Download.Status.FAILED, error=redaction.describe(exc)[:5000])


class Stopwatch:
    """The job's run time and how much of it went to each phase (download, upload)."""

    def __init__(self):
        self.started = time.monotonic()
        self.phases: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        began = time.monotonic()
        try:
            yield
        finally:
            self.phases[name] = self.phases.get(name, 0.0) + time.monotonic() - began

    def seconds(self) -> dict[str, float]:
        return {
            "seconds": round(time.monotonic() - self.started, 3),
            **{f"{name}_seconds": round(spent, 3) for name, spent in self.phases.items()},
        }


def summary(download: Download, clock: Stopwatch) -> dict:
    """What the job history shows for the download."""
    return {
        "url": download.url,
        "member": download.member.telegram_id,
        "kind": download.kind,
        "size": download.size,
        "from_cache": download.from_cache,
        **clock.seconds(),
    }
