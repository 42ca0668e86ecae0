"""What the member reads about a download: the progress message's texts and, when a download
cannot be done, why."""

from django.conf import settings

STARTING = "Downloading…"
UPLOADING = "Sending the file…"
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
DISK_FULL = "I've run out of room for downloads just now. Please send the link again a bit later."


def too_large() -> str:
    return f"That file is larger than the {settings.DOWNLOADS_MAX_BYTES // (1024 * 1024)} MB I can send on Telegram."


def daily_limit_reached() -> str:
    return (
        f"You've reached the limit of {settings.DOWNLOADS_PER_MEMBER_DAILY} downloads a day. Please try again tomorrow."
    )


def too_many_waiting(waiting: int) -> str:
    return f"You have {downloads_waiting(waiting)} waiting. Please send this link again when they're done."


def queued_behind(waiting: int) -> str:
    return f"Queued: you have {downloads_waiting(waiting)} waiting. {STARTING}"


def downloads_waiting(n: int) -> str:
    return f"{n} download" if n == 1 else f"{n} downloads"


def progress(status: dict) -> str:
    """yt-dlp's progress status as the member reads it: "Downloading… 42% 4.2 MB of 10.0 MB at 1.5 MB/s"."""
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
