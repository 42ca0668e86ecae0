"""A preview checks every recipient's text against Telegram's limit. A text that no member's
values can stretch past the limit needs no rendering at all: with 100,000 recipients the
preview would otherwise render thousands of texts on every visit."""

from datetime import date
from decimal import Decimal

import pytest

from bots.models import Bot, TelegramUser
from broadcasts.admin import Preview
from broadcasts.models import Broadcast, ParseMode, Pledge
from broadcasts.personalize import PLACEHOLDERS, longest_visible_length, render, visible_length

EVERY_PLACEHOLDER_BUT_CAMPAIGN = " ".join(f"#{tag}" for tag in PLACEHOLDERS if tag != "campaign")
TEXTS = {
    "": f"Hi {EVERY_PLACEHOLDER_BUT_CAMPAIGN} and #name again",
    ParseMode.HTML: f"<b>Hi</b> {EVERY_PLACEHOLDER_BUT_CAMPAIGN} &amp; <a href='https://x.org/?u=#username'>pay</a>",
    ParseMode.MARKDOWN_V2: f"*Hi* {EVERY_PLACEHOLDER_BUT_CAMPAIGN} \\- [pay](https://x.org)",
}


@pytest.fixture
def bot(db) -> Bot:
    return Bot.objects.create(token="7100001:bound")


@pytest.mark.django_db
@pytest.mark.parametrize("parse_mode", list(TEXTS))
def test_no_member_renders_longer_than_the_bound(bot, parse_mode):
    widest = TelegramUser.objects.create(
        bot=bot, telegram_id=1, first_name="😀" * 128, last_name="<&*_>" * 25 + "😀" * 3, username="u" * 64
    )
    pledges = [
        Pledge.objects.create(
            bot=bot, member=widest, telegram_id=1, amount=Decimal("999999999999.99"), due_date=date(9999, 12, 31)
        )
        for _ in range(3)
    ]
    text = TEXTS[parse_mode]

    rendered = render(text, widest, pledges, parse_mode, fallback="n/a")

    assert visible_length(rendered, parse_mode) <= longest_visible_length(text, parse_mode, "n/a")
    assert longest_visible_length(text + " #campaign", parse_mode, "n/a") is None


@pytest.mark.django_db
def test_a_short_text_to_more_members_than_are_rendered_counts_as_checked_in_full(bot, monkeypatch):
    monkeypatch.setattr(Preview, "FULL_CHECK_LIMIT", 20)
    TelegramUser.objects.bulk_create(
        TelegramUser(bot=bot, telegram_id=100 + i, first_name=f"M{i}", is_subscribed=True) for i in range(30)
    )
    short = Broadcast.objects.create(bot=bot, text="Dear #first_name, you owe #balance")
    unbounded = Broadcast.objects.create(bot=bot, text="Thank you for #campaign")

    preview = Preview.of(short)
    assert (preview.recipients, preview.checked, preview.sampled, preview.too_long) == (30, 30, False, 0)
    assert Preview.of(unbounded).checked == 20  # #campaign: a sample is rendered, as before
