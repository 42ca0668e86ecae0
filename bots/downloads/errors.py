"""How a download fails, in the job contract's terms: what retrying cannot fix is permanent,
with a message for the member; network trouble, timeouts and 5xx are retriable."""

from collections.abc import Iterator

from yt_dlp.networking.exceptions import HTTPError as YtHTTPError
from yt_dlp.networking.exceptions import TransportError
from yt_dlp.utils import DownloadError, ExtractorError, GeoRestrictedError, UnsupportedError

from bots.downloads import messages, url_safety
from bots.downloads.folders import DiskFull, is_disk_full
from queueing import redaction
from queueing.errors import PermanentError, RetriableError


class FileTooLarge(PermanentError):
    def __init__(self, message: str):
        super().__init__(message, user_message=messages.too_large())


class DownloadTimedOut(RetriableError):
    pass


def translate_error(exc: BaseException) -> PermanentError | RetriableError:
    """yt-dlp's failures (and what it wraps) as PermanentError or RetriableError."""
    technical = redaction.describe(exc)
    if unsafe := url_safety.refused(exc):
        return PermanentError(f"Refused: {unsafe}", user_message=messages.REFUSED)
    if isinstance(exc, url_safety.UnsafeURL):
        return PermanentError(f"Refused: {exc}", user_message=messages.REFUSED)
    causes = list(_chain(exc))
    for cause in causes:
        if isinstance(cause, PermanentError | RetriableError):
            return cause
        if is_disk_full(cause):
            return DiskFull(cause)
    if "ffmpeg" in technical.lower():
        # What needs ffmpeg (an encryption its HLS downloader does not handle, a live stream)
        # is not downloaded: ffmpeg would connect where the address check cannot follow.
        return PermanentError(technical, user_message=messages.NO_FORMAT)
    for cause in causes:
        if isinstance(cause, YtHTTPError):
            if cause.status >= 500 or cause.status in (408, 429):
                return RetriableError(technical)
            if cause.status in (404, 410):
                return PermanentError(technical, user_message=messages.NOT_FOUND)
            return PermanentError(technical, user_message=messages.PRIVATE)
    for cause in causes:
        if isinstance(cause, GeoRestrictedError):
            return PermanentError(technical, user_message=messages.GEO_BLOCKED)
        if isinstance(cause, UnsupportedError):
            return PermanentError(technical, user_message=messages.UNSUPPORTED)
        if isinstance(cause, TransportError | OSError | TimeoutError):
            return RetriableError(technical)
        if isinstance(cause, ExtractorError) and cause.expected:
            text = str(cause).lower()
            if "requested format" in text or "no video formats" in text:
                return PermanentError(technical, user_message=messages.NO_FORMAT)
            return PermanentError(technical, user_message=messages.PRIVATE)
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
