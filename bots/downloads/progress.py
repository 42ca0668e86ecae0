"""The member's progress message: sent when the link is taken, edited while the download
runs, replaced by the file (deleted) or by the reason it failed."""

import logging
import time

import telegram
from django.conf import settings

from bots.downloads import messages
from bots.models import Bot
from bots.telegram_api import call

logger = logging.getLogger(__name__)


class Progress:
    """Edits the member's progress message, at most every DOWNLOADS_PROGRESS_SECONDS. Edits
    are a courtesy: one that fails is logged and the download goes on."""

    def __init__(self, bot: Bot, chat_id: int, message_id: int | None):
        self.bot, self.chat_id, self.message_id = bot, chat_id, message_id
        self.last_edit = time.monotonic()
        self.last_text = str(messages.STARTING)

    def update(self, status: dict) -> None:
        if status.get("status") != "downloading":
            return
        now = time.monotonic()
        if now - self.last_edit < settings.DOWNLOADS_PROGRESS_SECONDS:
            return
        self.last_edit = now
        self.show(messages.progress(status))

    def uploading(self) -> None:
        self.show(messages.UPLOADING)

    def restart(self) -> None:
        """The message said the download had failed; it is on again."""
        self.last_text = ""
        self.show(messages.STARTING)

    def show(self, text: str) -> None:
        text = str(text)  # a lazy message (bots.downloads.messages), translated now
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
