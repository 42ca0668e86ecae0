"""Which of the bot's languages (settings.LANGUAGES) a member reads: their Telegram
language_code (`fr`, `fr-CA`, `pt-br`) matched to one the bot speaks, else LANGUAGE_CODE."""

from django.conf import settings
from django.utils import translation

from bots.models import TelegramUser


def language_for(member: TelegramUser | None) -> str:
    code = (member.language_code if member else "").lower().replace("_", "-")
    if not code:
        return settings.LANGUAGE_CODE
    try:
        return translation.get_supported_language_variant(code)
    except LookupError:
        return settings.LANGUAGE_CODE
