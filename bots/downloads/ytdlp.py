"""yt-dlp, the way downloads use it: one item per link, into a given folder, with our options
(no ffmpeg, no external downloader, no retries of its own), every request through the address
check (bots.downloads.url_safety), and its extractor list built once per process (warm_up)."""

import functools
import importlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yt_dlp
from django.conf import settings
from yt_dlp.downloader import DashSegmentsFD, HlsFD, HttpFD, get_suitable_downloader
from yt_dlp.networking.exceptions import NoSupportingHandlers

from bots.downloads import messages, url_safety
from bots.downloads.errors import DownloadTimedOut, FileTooLarge, translate_error
from bots.models import MediaCache
from queueing.errors import PermanentError, RetriableError

logger = logging.getLogger(__name__)

VIDEO_EXTS = {"mp4"}
AUDIO_EXTS = {"mp3", "m4a"}
PHOTO_EXTS = {"jpg", "jpeg", "png", "webp"}
PHOTO_MAX_BYTES = 10 * 1024 * 1024
# yt-dlp's own downloaders, which make every request through our request handler (and so
# through the address check); the protocols they take, as yt-dlp names them. See url_safety.
NATIVE_DOWNLOADERS = (HttpFD, HlsFD, DashSegmentsFD)
NATIVE_PROTOCOLS = "^(https?|m3u8(_native)?|http_dash_segments)$"
# A place where no ffmpeg can ever be (/dev/null is not a folder): yt-dlp runs without ffmpeg,
# even where it is installed, and even when its HLS downloader would hand a stream over to it.
NO_FFMPEG = os.path.join(os.devnull, "ffmpeg")


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
                user_message=messages.NO_FORMAT,
            )
        return super().dl(name, info, subtitle, test)

    def urlopen(self, req):
        """A refusal ends the download as a permanent error. yt-dlp would take it for a network
        error: retry it, skip a segment, or keep only its text (a fragment's "Got error: …")."""
        try:
            return super().urlopen(req)
        except NoSupportingHandlers as exc:
            raise PermanentError(f"Refused: {exc}", user_message=messages.REFUSED) from exc
        except Exception as exc:
            if unsafe := url_safety.refused(exc):
                raise PermanentError(f"Refused: {unsafe}", user_message=messages.REFUSED) from exc
            raise


class PublicOnlyYoutubeDL(ProjectYoutubeDL):
    """Every request through the request handler that refuses internal addresses."""

    request_handler = url_safety.PublicOnlyRH


def downloader(options: dict, guarded: bool) -> yt_dlp.YoutubeDL:
    return PublicOnlyYoutubeDL(options) if guarded else ProjectYoutubeDL(options)


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
    importlib.import_module("yt_dlp.extractor.generic")


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
        raise PermanentError(f"{info.get('webpage_url')} is a playlist", user_message=messages.PLAYLIST)
    if info.get("is_live") or info.get("live_status") in ("is_live", "is_upcoming"):
        raise PermanentError("Live stream", user_message=messages.LIVE)
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


class YtDlpLogger:
    """yt-dlp's chatter at debug level; its errors are raised to us anyway."""

    def debug(self, message: str) -> None:
        logger.debug("%s", message)

    info = debug
    warning = debug
    error = debug
