"""What the member reads about a download: the progress message's texts and, when a download
cannot be done, why. The constants are lazy: each is translated when it is sent, in the
language of the member it is sent to (bots.languages)."""

from django.conf import settings
from django.utils.formats import number_format
from django.utils.translation import gettext, gettext_lazy, ngettext

STARTING = gettext_lazy("Downloading…")
UPLOADING = gettext_lazy("Sending the file…")
NOT_HTTP = gettext_lazy("I can only download http and https links.")
REFUSED = gettext_lazy("I can't download from that address.")
UNSUPPORTED = gettext_lazy("I can't find a video or a track at that link.")
NOT_FOUND = gettext_lazy("There's nothing at that link any more (it may have been removed).")
PRIVATE = gettext_lazy("That item is private, removed or not available, so I can't download it.")
GEO_BLOCKED = gettext_lazy("That item isn't available in the country I download from.")
NO_FORMAT = gettext_lazy("I couldn't find a version of that item that Telegram can play.")
PLAYLIST = gettext_lazy("Please send a link to a single video or track, not a playlist.")
LIVE = gettext_lazy("Live streams can't be downloaded. Send the link again once the recording is up.")
GAVE_UP = gettext_lazy("Sorry, I couldn't download that: the site didn't answer properly. Please try again later.")
RETRYING = gettext_lazy("The download was interrupted; trying again shortly…")
MAYBE_SENT = gettext_lazy("Telegram took too long to confirm the file. If it has not reached you, send the link again.")
DISK_FULL = gettext_lazy("I've run out of room for downloads just now. Please send the link again a bit later.")


def too_large() -> str:
    return gettext("That file is larger than the %(megabytes)d MB I can send on Telegram.") % {
        "megabytes": settings.DOWNLOADS_MAX_BYTES // (1024 * 1024)
    }


def daily_limit_reached() -> str:
    limit = settings.DOWNLOADS_PER_MEMBER_DAILY
    return ngettext(
        "You've reached the limit of %(limit)d download a day. Please try again tomorrow.",
        "You've reached the limit of %(limit)d downloads a day. Please try again tomorrow.",
        limit,
    ) % {"limit": limit}


def too_many_waiting(waiting: int) -> str:
    return ngettext(
        "You have %(waiting)d download waiting. Please send this link again when they're done.",
        "You have %(waiting)d downloads waiting. Please send this link again when they're done.",
        waiting,
    ) % {"waiting": waiting}


def queued_behind(waiting: int) -> str:
    return ngettext(
        "Queued: you have %(waiting)d download waiting. Downloading…",
        "Queued: you have %(waiting)d downloads waiting. Downloading…",
        waiting,
    ) % {"waiting": waiting}


def progress(status: dict) -> str:
    """yt-dlp's progress status as the member reads it: "Downloading… 42% 4.2 MB of 10.0 MB at 1.5 MB/s"."""
    done = status.get("downloaded_bytes") or 0
    total = status.get("total_bytes") or status.get("total_bytes_estimate")
    speed = status.get("speed")
    if total:
        text = gettext("%(percent)s %(done)s of %(total)s") % {
            "percent": percent(done / total),
            "done": megabytes(done),
            "total": megabytes(total),
        }
    else:
        text = megabytes(done)
    if speed:
        text = gettext("%(progress)s at %(speed)s/s") % {"progress": text, "speed": megabytes(speed)}
    return f"{STARTING} {text}"


def percent(fraction: float) -> str:
    # Translators: French writes "42 %".
    return gettext("%(percent)s%%") % {"percent": number_format(round(fraction * 100), 0)}


def megabytes(size: float) -> str:
    # number_format cuts a float's decimals off: rounding first keeps 4.19 MB "4.2 MB".
    return gettext("%(size)s MB") % {"size": number_format(round(size / (1024 * 1024), 1), 1)}
