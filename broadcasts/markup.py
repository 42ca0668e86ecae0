"""The inline keyboard under each delivery's message: its version's URL buttons, one a row,
through the click-tracking redirect when PUBLIC_URL is set (broadcasts.clicks), then the Stop
button (broadcasts.unsubscribe)."""

from collections.abc import Iterable

import telegram

from broadcasts import clicks, unsubscribe
from broadcasts.models import url_buttons
from broadcasts.variants import Version


class Keyboards:
    """Each version's buttons, read once; a send only fills in its delivery's tokens. Built
    once per sender, so PUBLIC_URL is read then."""

    def __init__(self, versions: Iterable[Version], tracked: bool = True):
        self.base = clicks.redirect_base() if tracked and clicks.is_tracking() else ""
        self.by_key = {version.key: (url_buttons(version.buttons), version.stop_text) for version in versions}

    def of(self, version: Version, delivery_id: int | None) -> dict | None:
        """The reply_markup for this delivery of `version` (None: no buttons). Without a
        delivery (a test send), URL buttons go direct and Stop only says what it would do."""
        buttons, stop_text = self.by_key[version.key]
        rows = [[{"text": b["text"], "url": self._url(b["url"], delivery_id, i)}] for i, b in enumerate(buttons)]
        if stop_text:
            rows.append([{"text": stop_text, "callback_data": unsubscribe.callback_data(delivery_id)}])
        return {"inline_keyboard": rows} if rows else None

    def _url(self, url: str, delivery_id: int | None, button: int) -> str:
        if not self.base or delivery_id is None:
            return url
        return clicks.tracked_url(delivery_id, button, self.base)


def keyboard_for_test(version: Version) -> telegram.InlineKeyboardMarkup | None:
    """A test send's buttons: as a member gets them, but direct, so the test counts no click."""
    markup = Keyboards([version], tracked=False).of(version, None)
    return telegram.InlineKeyboardMarkup.de_json(markup, None) if markup else None
