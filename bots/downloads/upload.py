"""The upload to Telegram, and what Telegram already holds: the file_id of what we sent for a
link is remembered (MediaCache), so the same link is answered from Telegram's copy next time."""

from contextlib import ExitStack
from pathlib import Path
from typing import Any

import telegram
from django.conf import settings

from bots.models import Bot, MediaCache
from bots.telegram_api import call

# Bump when the format choice changes, so cached file_ids of the old choice are not reused.
FORMAT_VERSION = "v1"
CAPTION_LIMIT = 1024
SEND_METHODS = {
    MediaCache.Kind.VIDEO: "send_video",
    MediaCache.Kind.AUDIO: "send_audio",
    MediaCache.Kind.PHOTO: "send_photo",
    MediaCache.Kind.DOCUMENT: "send_document",
}


def format_key() -> str:
    return f"{FORMAT_VERSION}-{settings.DOWNLOADS_MAX_BYTES}"


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


def remember(bot: Bot, url: str, file_id: str, kind: str, title: str, size: int) -> None:
    MediaCache.objects.update_or_create(
        bot=bot,
        url=url,
        format_key=format_key(),
        defaults={"file_id": file_id, "kind": kind, "title": title[:300], "size": size},
    )


def caption(title: str, url: str) -> str:
    text = f"{title}\n{url}" if title else url
    return text if len(text) <= CAPTION_LIMIT else text[: CAPTION_LIMIT - 1] + "…"


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
