"""A member sends a link (on the `telegram` queue): it is answered from Telegram's copy, refused
(not http, over the daily limit, too many waiting), or queued as a download job behind the
member's earlier ones, with a progress message that the job keeps editing."""

from collections.abc import Callable
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from bots.downloads import messages
from bots.downloads.upload import send_cached
from bots.downloads.url_safety import ALLOWED_SCHEMES
from bots.handlers import Context
from bots.models import Bot, Download, TelegramUser
from bots.tasks import download_media


def answer_link(context: Context, url: str) -> None:
    """How bots.handlers answers a message with a link (registered in BotsConfig.ready())."""
    request(context.bot, context.member, context.chat_id, url, context.reply)


def request(bot: Bot, member: TelegramUser, chat_id: int, url: str, reply: Callable[[str], Any]) -> None:
    url = normalize_url(url)
    if send_cached(bot, chat_id, url):
        return
    if urlsplit(url).scheme not in ALLOWED_SCHEMES:
        reply(messages.NOT_HTTP)
        return
    today = Download.objects.filter(member=member).since(timezone.now() - timedelta(days=1)).count()
    if today >= settings.DOWNLOADS_PER_MEMBER_DAILY:
        reply(messages.daily_limit_reached())
        return
    waiting = max(Download.objects.active().filter(member=member).count() - 1, 0)
    active = Download.objects.active().filter(member=member).exists()
    if active and waiting >= settings.DOWNLOADS_MAX_WAITING:
        reply(messages.too_many_waiting(waiting))
        return
    message = reply(messages.queued_behind(waiting + 1) if active else messages.STARTING)
    with transaction.atomic():
        download = Download.objects.create(
            bot=bot, member=member, url=url, chat_id=chat_id, message_id=getattr(message, "message_id", None)
        )
        download.job = download_media.enqueue_with(
            args=[download.pk], label=f"download {url} for member {member.telegram_id}"[:300]
        )
        download.save(update_fields=["job"])


def normalize_url(url: str) -> str:
    """The link as the cache knows it: no fragment, lower-case scheme and host."""
    parts = urlsplit(url.strip())
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path or "/", parts.query, ""))
