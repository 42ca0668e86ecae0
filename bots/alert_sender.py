"""How queueing's alerts reach the operators' chats: the platform's bot sends them, paced
with its replies and broadcasts (registered in BotsConfig.ready() as queueing's alert
sender, so queueing never imports bots)."""

import telegram
from django.conf import settings

from bots import pacing, telegram_api
from bots.models import Bot
from queueing.errors import PermanentError


def alert_bot() -> Bot:
    """The bot of TELEGRAM_BOT_TOKEN, else the first active bot."""
    bots = Bot.objects.filter(is_active=True).order_by("pk")
    bot = None
    if settings.TELEGRAM_BOT_TOKEN:
        bot = bots.filter(telegram_id=Bot.id_from_token(settings.TELEGRAM_BOT_TOKEN)).first()
    bot = bot or bots.first()
    if bot is None:
        raise PermanentError("No bot to send alerts from: set TELEGRAM_BOT_TOKEN")
    return bot


def send_alert(chat_id: int, text: str) -> dict:
    """The bot's rate is shared with replies and broadcasts; a 429 pauses the bot for
    everyone and the alert job retries after it."""
    bot = alert_bot()
    pacing.wait_for_reply_slot(bot, chat_id)
    try:
        with pacing.departing(bot):
            message = telegram_api.call(bot, "send_message", chat_id=chat_id, text=text)
    except telegram.error.RetryAfter as exc:
        pacing.pause_after_429(bot, exc)
        raise
    return {"chat_id": chat_id, "message_id": message.message_id}
