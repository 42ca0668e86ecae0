"""Media downloads: a member sends a link, yt-dlp fetches it on the `downloads` queue in a
folder of its own, and the file goes back to the member through the Bot API, with its
file_id remembered so the same link is answered from Telegram's copy next time."""

import functools
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import telegram
import yt_dlp
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from yt_dlp.downloader import DashSegmentsFD, HlsFD, HttpFD, get_suitable_downloader
from yt_dlp.networking.exceptions import HTTPError as YtHTTPError
from yt_dlp.networking.exceptions import NoSupportingHandlers, TransportError
from yt_dlp.utils import DownloadError, ExtractorError, GeoRestrictedError, UnsupportedError

from bots import url_safety
from bots.download_folders import DiskFull, is_disk_full, temporary_folder
from bots.models import Bot, Download, MediaCache, TelegramUser
from bots.telegram_api import call
from queueing import redaction
from queueing.errors import (
    DEFERRED,
    MAYBE_DONE,
    PERMANENT,
    RATE_LIMITED,
    Deferred,
    PermanentError,
    RetriableError,
    classify,
)
from queueing.models import JobRecord

logger = logging.getLogger(__name__)

# Bump when the format choice changes, so cached file_ids of the old choice are not reused.
FORMAT_VERSION = "v1"
VIDEO_EXTS = {"mp4"}
AUDIO_EXTS = {"mp3", "m4a"}
PHOTO_EXTS = {"jpg", "jpeg", "png", "webp"}
PHOTO_MAX_BYTES = 10 * 1024 * 1024
CAPTION_LIMIT = 1024
# A download waiting for the member's earlier one looks again this often.
TURN_WAIT_SECONDS = 2.0
# yt-dlp's own downloaders, which make every request through our request handler (and so
# through the address check); the protocols they take, as yt-dlp names them. See bots.url_safety.
NATIVE_DOWNLOADERS = (HttpFD, HlsFD, DashSegmentsFD)
NATIVE_PROTOCOLS = "^(https?|m3u8(_native)?|http_dash_segments)$"
# A place where no ffmpeg can ever be (/dev/null is not a folder): yt-dlp runs without ffmpeg,
# even where it is installed, and even when its HLS downloader would hand a stream over to it.
NO_FFMPEG = os.path.join(os.devnull, "ffmpeg")

STARTING = "Downloading…"
NOT_HTTP = "I can only download http and https links."
REFUSED = "I can't download from that address."
UNSUPPORTED = "I can't find a video or a track at that link."
NOT_FOUND = "There's nothing at that link any more (it may have been removed)."
PRIVATE = "That item is private, removed or not available, so I can't download it."
GEO_BLOCKED = "That item isn't available in the country I download from."
NO_FORMAT = "I couldn't find a version of that item that Telegram can play."
PLAYLIST = "Please send a link to a single video or track, not a playlist."
LIVE = "Live streams can't be downloaded. Send the link again once the recording is up."
GAVE_UP = "Sorry, I couldn't download that: the site didn't answer properly. Please try again later."
RETRYING = "The download was interrupted; trying again shortly…"
MAYBE_SENT = "Telegram took too long to confirm the file. If it has not reached you, send the link again."


def too_large_message() -> str:
    return f"That file is larger than the {settings.DOWNLOADS_MAX_BYTES // (1024 * 1024)} MB I can send on Telegram."


class FileTooLarge(PermanentError):
    def __init__(self, message: str):
        super().__init__(message, user_message=too_large_message())


class DownloadTimedOut(RetriableError):
    pass


def format_key() -> str:
    return f"{FORMAT_VERSION}-{settings.DOWNLOADS_MAX_BYTES}"


def normalize_url(url: str) -> str:
    """The link as the cache knows it: no fragment, lower-case scheme and host."""
    parts = urlsplit(url.strip())
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path or "/", parts.query, ""))


# --- asking for a download (telegram queue) ----------------------------------------------------


def request(bot: Bot, member: TelegramUser, chat_id: int, url: str, reply: Callable[[str], Any]) -> None:
    """A member sent a link: answer from the cache, refuse, or queue the download with a
    progress message that the download job keeps editing."""
    from bots.tasks import download_media

    url = normalize_url(url)
    if send_cached(bot, chat_id, url):
        return
    if urlsplit(url).scheme not in url_safety.ALLOWED_SCHEMES:
        reply(NOT_HTTP)
        return
    today = Download.objects.filter(member=member).since(timezone.now() - timedelta(days=1)).count()
    if today >= settings.DOWNLOADS_PER_MEMBER_DAILY:
        reply(
            f"You've reached the limit of {settings.DOWNLOADS_PER_MEMBER_DAILY} downloads a day. "
            "Please try again tomorrow."
        )
        return
    waiting = max(Download.objects.active().filter(member=member).count() - 1, 0)
    active = Download.objects.active().filter(member=member).exists()
    if active and waiting >= settings.DOWNLOADS_MAX_WAITING:
        reply(f"You have {downloads_waiting(waiting)} waiting. Please send this link again when they're done.")
        return
    text = f"Queued: you have {downloads_waiting(waiting + 1)} waiting. {STARTING}" if active else STARTING
    message = reply(text)
    with transaction.atomic():
        download = Download.objects.create(
            bot=bot, member=member, url=url, chat_id=chat_id, message_id=getattr(message, "message_id", None)
        )
        download.job = download_media.enqueue_with(
            args=[download.pk], label=f"download {url} for member {member.telegram_id}"[:300]
        )
        download.save(update_fields=["job"])


def downloads_waiting(n: int) -> str:
    return f"{n} download" if n == 1 else f"{n} downloads"


def send_cached(bot: Bot, chat_id: int, url: str) -> bool:
    """Send what Telegram already holds for this link; False if nothing usable is cached."""
    cached = MediaCache.objects.filter(bot=bot, url=url, format_key=format_key()).first()
    if cached is None:
        return False
    try:
        send_media(bot, chat_id, cached.kind, cached.file_id, caption(cached.title, url))
    except telegram.error.BadRequest:
        # Telegram no longer knows the file_id: download it again.
        cached.delete()
        return False
    return True


# --- the download job (downloads queue) ----------------------------------------------------------


def run(download_pk: int) -> dict:
    """1. If an operator retried the download's job, this newer job takes the download over.
    2. Wait (without using an attempt) while the member's earlier download is still to finish.
    3. Answer from the cache if the link was sent meanwhile.
    4. Download into a fresh folder, upload, remember the file_id, remove the progress message.
    On failure the member's progress message says what went wrong, once no retry is left."""
    download = Download.objects.select_related("bot", "member").get(pk=download_pk)
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
        MediaCache.objects.update_or_create(
            bot=bot,
            url=download.url,
            format_key=format_key(),
            defaults={"file_id": file_id, "kind": media.kind, "title": media.title[:300], "size": media.size},
        )
        progress.remove()
        download.mark(Download.Status.SENT, kind=media.kind, size=media.size)
        return summary(download, clock)
    except BaseException as exc:
        fail(download, progress, exc)
        raise


def fail(download: Download, progress: "Progress", exc: BaseException) -> None:
    """Tell the member, unless the job will run again."""
    error_class = classify(exc).error_class
    if error_class in (RATE_LIMITED, DEFERRED):
        return
    if error_class == MAYBE_DONE:
        progress.show(MAYBE_SENT)
        download.mark(Download.Status.FAILED, error=redaction.describe(exc)[:5000])
        return
    if isinstance(exc, DiskFull):
        # Permanent errors stay out of Sentry; this one is the operator's to fix.
        logger.error("Download %s: %s", download.pk, exc)
    if error_class != PERMANENT and not _last_attempt(download):
        progress.show(RETRYING)
        return
    user_message = exc.user_message if isinstance(exc, PermanentError) and exc.user_message else GAVE_UP
    progress.show(user_message)
    download.mark(Download.Status.FAILED, error=redaction.describe(exc)[:5000])


def _last_attempt(download: Download) -> bool:
    job = JobRecord.objects.filter(pk=download.job_id).values("attempts", "max_attempts").first()
    return job is None or job["attempts"] >= job["max_attempts"]


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


def caption(title: str, url: str) -> str:
    text = f"{title}\n{url}" if title else url
    return text if len(text) <= CAPTION_LIMIT else text[: CAPTION_LIMIT - 1] + "…"


class Progress:
    """Edits the member's progress message, at most every DOWNLOADS_PROGRESS_SECONDS. Edits
    are a courtesy: one that fails is logged and the download goes on."""

    def __init__(self, bot: Bot, chat_id: int, message_id: int | None):
        self.bot, self.chat_id, self.message_id = bot, chat_id, message_id
        self.last_edit = time.monotonic()
        self.last_text = STARTING

    def update(self, status: dict) -> None:
        if status.get("status") != "downloading":
            return
        now = time.monotonic()
        if now - self.last_edit < settings.DOWNLOADS_PROGRESS_SECONDS:
            return
        self.last_edit = now
        self.show(progress_text(status))

    def uploading(self) -> None:
        self.show("Sending the file…")

    def restart(self) -> None:
        """The message said the download had failed; it is on again."""
        self.last_text = ""
        self.show(STARTING)

    def show(self, text: str) -> None:
        if self.message_id is None or text == self.last_text:
            return
        self.last_text = text
        try:
            call(self.bot, "edit_message_text", chat_id=self.chat_id, message_id=self.message_id, text=text)
        except telegram.error.TelegramError as exc:
            logger.info("Progress message %s not edited: %s", self.message_id, exc)

    def remove(self) -> None:
        if self.message_id is None:
            return
        try:
            call(self.bot, "delete_message", chat_id=self.chat_id, message_id=self.message_id)
        except telegram.error.TelegramError as exc:
            logger.info("Progress message %s not deleted: %s", self.message_id, exc)


def progress_text(status: dict) -> str:
    done = status.get("downloaded_bytes") or 0
    total = status.get("total_bytes") or status.get("total_bytes_estimate")
    speed = status.get("speed")
    parts = [f"{done * 100 / total:.0f}%" if total else "", f"{megabytes(done)}"]
    if total:
        parts[1] += f" of {megabytes(total)}"
    if speed:
        parts.append(f"at {megabytes(speed)}/s")
    return "Downloading… " + " ".join(part for part in parts if part)


def megabytes(size: float) -> str:
    return f"{size / (1024 * 1024):.1f} MB"


# --- yt-dlp ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Media:
    path: Path
    kind: str
    title: str
    size: int


def fetch(url: str, folder: Path, on_progress: Callable[[dict], None]) -> Media:
    """Download a single item into `folder`; every failure comes out as PermanentError or
    RetriableError, with a message for the member on the permanent ones."""
    guarded = not settings.DOWNLOADS_ALLOW_PRIVATE_HOSTS
    try:
        if guarded:
            url_safety.check_url(url)
        watchdog = Watchdog(settings.DOWNLOADS_MAX_BYTES, settings.DOWNLOADS_TIMEOUT, on_progress)
        with downloader(ydl_options(folder, watchdog), guarded) as ydl:
            info = ydl.extract_info(url, download=False)
            check_info(info)
            info = ydl.process_ie_result(info, download=True)
    except (PermanentError, RetriableError):
        raise
    except Exception as exc:
        raise translate_error(exc) from exc
    return media_from(info, folder)


def ydl_options(folder: Path, watchdog: "Watchdog") -> dict:
    limit = settings.DOWNLOADS_MAX_BYTES
    native = f"[protocol~='{NATIVE_PROTOCOLS}']"
    return {
        "outtmpl": {"default": str(folder / "%(id).60B.%(ext)s")},
        "paths": {"home": str(folder), "temp": str(folder)},
        "restrictfilenames": True,
        # Telegram plays mp4 (H.264) and m4a; the biggest that fits, else the best, which
        # check_info then refuses as too large. Single files only: no ffmpeg merging. Only
        # protocols that yt-dlp's own downloaders fetch.
        "format": f"b[filesize<=?{limit}][filesize_approx<=?{limit}]{native}/b{native}",
        "external_downloader": {"default": "native"},
        "ffmpeg_location": NO_FFMPEG,
        "format_sort": ["ext:mp4:m4a", "vcodec:h264"],
        "noplaylist": True,
        "extract_flat": "in_playlist",
        "socket_timeout": settings.DOWNLOADS_SOCKET_TIMEOUT,
        # Our job contract retries (with backoff); yt-dlp's own retries would multiply them.
        "retries": 0,
        "fragment_retries": 0,
        # A segment that cannot be fetched fails the download rather than leaving a gap in it.
        "skip_unavailable_fragments": False,
        "extractor_retries": 0,
        "file_access_retries": 0,
        "progress_hooks": [watchdog],
        "fixup": "never",
        "cachedir": False,
        "noprogress": True,
        "quiet": True,
        "no_warnings": True,
        "color": {"stdout": "no_color", "stderr": "no_color"},
        "logger": YtDlpLogger(),
    }


class ProjectYoutubeDL(yt_dlp.YoutubeDL):
    """YoutubeDL that speaks http(s) only and runs only its own downloaders, with its extractor
    list built once per worker process, not once per download."""

    request_handler: type[url_safety.HTTPOnlyRH] = url_safety.HTTPOnlyRH

    @functools.cached_property
    def _request_director(self):
        return self.build_request_director([self.request_handler])

    def add_default_info_extractors(self) -> None:
        for extractor in default_extractors():
            # Classes are shared; an instance, should yt-dlp's list hold one, is bound to one downloader.
            self.add_info_extractor(extractor if isinstance(extractor, type) else type(extractor)())

    def dl(self, name, info, subtitle=False, test=False):
        """Only yt-dlp's own downloaders run, whatever the format and the options say: an
        external program would open connections that the address check never sees."""
        chosen = get_suitable_downloader(dict(info), self.params, to_stdout=name == "-")
        if chosen not in NATIVE_DOWNLOADERS:
            raise PermanentError(
                f"{info.get('protocol')} needs {getattr(chosen, '__name__', 'several downloaders')}, which is off",
                user_message=NO_FORMAT,
            )
        return super().dl(name, info, subtitle, test)

    def urlopen(self, req):
        """A refusal ends the download as a permanent error. yt-dlp would take it for a network
        error: retry it, skip a segment, or keep only its text (a fragment's "Got error: …")."""
        try:
            return super().urlopen(req)
        except NoSupportingHandlers as exc:
            raise PermanentError(f"Refused: {exc}", user_message=REFUSED) from exc
        except Exception as exc:
            if unsafe := url_safety.refused(exc):
                raise PermanentError(f"Refused: {unsafe}", user_message=REFUSED) from exc
            raise


@functools.cache
def default_extractors() -> tuple:
    """yt-dlp's own default list, in its order. YoutubeDL rebuilds it on every construction
    with a quadratic de-duplication of some 1,800 names: about 50 ms of CPU per download."""
    return tuple(yt_dlp.YoutubeDL({"quiet": True, "no_warnings": True})._ies.values())


def warm_up() -> None:
    """Do once what a process's first download would: build the extractor list, compile every
    extractor's URL pattern (each class keeps its own) and import the generic extractor. Called
    in the downloads cluster's main process, whose forked workers then start warm."""
    for extractor in default_extractors():
        extractor.suitable("https://warm-up.invalid/")
    import yt_dlp.extractor.generic  # noqa: F401


class PublicOnlyYoutubeDL(ProjectYoutubeDL):
    """Every request through the request handler that refuses internal addresses."""

    request_handler = url_safety.PublicOnlyRH


def downloader(options: dict, guarded: bool) -> yt_dlp.YoutubeDL:
    return PublicOnlyYoutubeDL(options) if guarded else ProjectYoutubeDL(options)


class Watchdog:
    """yt-dlp's progress hook: passes progress on, and stops a download that grows past the
    upload limit or runs past the download timeout (exceptions raised here end it)."""

    def __init__(self, max_bytes: int, timeout: float, on_progress: Callable[[dict], None]):
        self.max_bytes, self.timeout, self.on_progress = max_bytes, timeout, on_progress
        self.started = time.monotonic()

    def __call__(self, status: dict) -> None:
        size = max(status.get("total_bytes") or 0, status.get("downloaded_bytes") or 0)
        if size > self.max_bytes:
            raise FileTooLarge(f"{size} bytes is over the {self.max_bytes} byte limit")
        if time.monotonic() - self.started > self.timeout:
            raise DownloadTimedOut(f"Download took longer than {self.timeout} s")
        self.on_progress(status)


def check_info(info: dict) -> None:
    if info.get("_type") in ("playlist", "multi_video"):
        raise PermanentError(f"{info.get('webpage_url')} is a playlist", user_message=PLAYLIST)
    if info.get("is_live") or info.get("live_status") in ("is_live", "is_upcoming"):
        raise PermanentError("Live stream", user_message=LIVE)
    size = info.get("filesize") or info.get("filesize_approx")
    if size and size > settings.DOWNLOADS_MAX_BYTES:
        raise FileTooLarge(f"The smallest fitting format is {size} bytes, over {settings.DOWNLOADS_MAX_BYTES}")


def media_from(info: dict, folder: Path) -> Media:
    files = [path for path in folder.iterdir() if path.is_file() and not path.name.endswith((".part", ".ytdl"))]
    if len(files) != 1:
        raise RetriableError(f"Expected one downloaded file, found {[path.name for path in files]}")
    path = files[0]
    size = path.stat().st_size
    if size > settings.DOWNLOADS_MAX_BYTES:
        raise FileTooLarge(f"{size} bytes is over the {settings.DOWNLOADS_MAX_BYTES} byte limit")
    return Media(path=path, kind=kind_of(info, path, size), title=info.get("title") or "", size=size)


def kind_of(info: dict, path: Path, size: int) -> str:
    """How Telegram should receive the file: played inline where it can, else as a document."""
    ext = path.suffix.lstrip(".").lower()
    if ext in PHOTO_EXTS:
        return MediaCache.Kind.PHOTO if size <= PHOTO_MAX_BYTES else MediaCache.Kind.DOCUMENT
    if ext in AUDIO_EXTS and info.get("vcodec") in (None, "none"):
        return MediaCache.Kind.AUDIO
    if ext in VIDEO_EXTS and info.get("vcodec") != "none":
        return MediaCache.Kind.VIDEO
    return MediaCache.Kind.DOCUMENT


def translate_error(exc: BaseException) -> PermanentError | RetriableError:
    """yt-dlp's failures in the job contract's terms: what retrying cannot fix is permanent,
    with a message for the member; network trouble, timeouts and 5xx are retriable."""
    technical = redaction.describe(exc)
    if unsafe := url_safety.refused(exc):
        return PermanentError(f"Refused: {unsafe}", user_message=REFUSED)
    if isinstance(exc, url_safety.UnsafeURL):
        return PermanentError(f"Refused: {exc}", user_message=REFUSED)
    causes = list(_chain(exc))
    for cause in causes:
        if isinstance(cause, PermanentError | RetriableError):
            return cause
        if is_disk_full(cause):
            return DiskFull(cause)
    if "ffmpeg" in technical.lower():
        # What needs ffmpeg (an encryption its HLS downloader does not handle, a live stream)
        # is not downloaded: ffmpeg would connect where the address check cannot follow.
        return PermanentError(technical, user_message=NO_FORMAT)
    for cause in causes:
        if isinstance(cause, YtHTTPError):
            if cause.status >= 500 or cause.status in (408, 429):
                return RetriableError(technical)
            if cause.status in (404, 410):
                return PermanentError(technical, user_message=NOT_FOUND)
            return PermanentError(technical, user_message=PRIVATE)
    for cause in causes:
        if isinstance(cause, GeoRestrictedError):
            return PermanentError(technical, user_message=GEO_BLOCKED)
        if isinstance(cause, UnsupportedError):
            return PermanentError(technical, user_message=UNSUPPORTED)
        if isinstance(cause, TransportError | OSError | TimeoutError):
            return RetriableError(technical)
        if isinstance(cause, ExtractorError) and cause.expected:
            text = str(cause).lower()
            if "requested format" in text or "no video formats" in text:
                return PermanentError(technical, user_message=NO_FORMAT)
            return PermanentError(technical, user_message=PRIVATE)
    # A connection dropped mid-file, and whatever else yt-dlp reports without a cause.
    return RetriableError(technical)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        if isinstance(current, DownloadError) and current.exc_info and current.exc_info[1] is not None:
            current = current.exc_info[1]
        elif isinstance(getattr(current, "cause", None), BaseException):
            current = current.cause
        else:
            current = current.__cause__ or current.__context__


class YtDlpLogger:
    """yt-dlp's chatter at debug level; its errors are raised to us anyway."""

    def debug(self, message: str) -> None:
        logger.debug("%s", message)

    info = debug
    warning = debug
    error = debug


# --- the upload -------------------------------------------------------------------------------------

SEND_METHODS = {
    MediaCache.Kind.VIDEO: "send_video",
    MediaCache.Kind.AUDIO: "send_audio",
    MediaCache.Kind.PHOTO: "send_photo",
    MediaCache.Kind.DOCUMENT: "send_document",
}


def send_media(bot: Bot, chat_id: int, kind: str, media: Path | str, text: str) -> str:
    """Send a file (a Path), streamed from disk, or what Telegram holds (a file_id); returns the
    sent file's file_id."""
    params: dict[str, Any] = {"chat_id": chat_id, "caption": text, "write_timeout": 300, "read_timeout": 60}
    if kind == MediaCache.Kind.VIDEO:
        params["supports_streaming"] = True
    with ExitStack() as stack:
        if isinstance(media, Path):
            # Streamed: a file may be up to 2000 MB on a local Bot API server.
            file = stack.enter_context(media.open("rb"))
            params[kind] = telegram.InputFile(file, filename=media.name, read_file_handle=False)
        else:
            params[kind] = media
        message = call(bot, SEND_METHODS[kind], **params)
    sent = message.photo[-1] if kind == MediaCache.Kind.PHOTO else getattr(message, kind)
    return sent.file_id
