"""Placeholders are replaced by each member's values, escaped for the parse mode, and every
other hashtag is left alone."""

from datetime import date, timedelta
from decimal import Decimal

import pytest

from bots.models import Bot, TelegramUser
from broadcasts.models import Pledge
from broadcasts.personalize import (
    MAX_CAPTION,
    MAX_TEXT,
    PLACEHOLDERS,
    needs_pledge,
    render,
    too_long,
    unknown_hashtags,
    visible_length,
)

TODAY = date.today()


def member(first_name="Ann", last_name="Lee", username="ann") -> TelegramUser:
    return TelegramUser(telegram_id=42, first_name=first_name, last_name=last_name, username=username)


def pledge(amount="1250", paid="250", due=None, campaign="Roof", currency="USD") -> Pledge:
    return Pledge(
        telegram_id=42,
        amount=Decimal(amount),
        paid_amount=Decimal(paid),
        due_date=due,
        campaign=campaign,
        currency=currency,
    )


def test_every_placeholder_is_replaced_in_plain_text():
    due = TODAY + timedelta(days=10)
    text = " | ".join(f"#{name}" for name in PLACEHOLDERS)

    rendered = render(text, member(), [pledge(due=due)], "")

    assert rendered.split(" | ") == [
        "Ann Lee",
        "Ann",
        "@ann",
        "1,250 USD",
        "250 USD",
        "1,000 USD",
        "10",
        due.strftime("%d %b %Y"),
        "Roof",
    ]


def test_the_placeholder_list_is_the_one_in_the_design():
    assert set(PLACEHOLDERS) == {
        "name",
        "first_name",
        "username",
        "pledge",
        "paid_amount",
        "balance",
        "days_remain",
        "due_date",
        "campaign",
    }


def test_cents_and_thousands_are_formatted_by_the_pledge():
    rendered = render("#pledge / #paid_amount / #balance", member(), [pledge("1234567.5", "99.50")], "")

    assert rendered == "1,234,567.50 USD / 99.50 USD / 1,234,468 USD"


@pytest.mark.parametrize(
    ("first", "last", "username", "name", "first_name", "at_username"),
    [
        ("Ann", "", "ann", "Ann", "Ann", "@ann"),
        ("", "", "ann", "ann", "ann", "@ann"),
        ("", "", "", "friend", "friend", ""),
        ("Ann", "Lee", "", "Ann Lee", "Ann", ""),
    ],
)
def test_names_fall_back_to_the_username_then_friend(first, last, username, name, first_name, at_username):
    rendered = render("#name|#first_name|#username", member(first, last, username), [], "")

    assert rendered == f"{name}|{first_name}|{at_username}"


def test_a_hashtag_that_is_not_a_placeholder_stays_as_written():
    text = "#news #Name #balnce #pledge_amount #pledges ##name #"

    assert render(text, member(), [pledge()], "") == "#news #Name #balnce #pledge_amount #pledges #Ann Lee #"


def test_a_placeholder_is_the_whole_tag_not_a_prefix():
    rendered = render("#pledges #pledge_total #pledge2 #pledge. #pledge! (#pledge)", member(), [pledge()], "")

    assert rendered == "#pledges #pledge_total #pledge2 1,250 USD. 1,250 USD! (1,250 USD)"


def test_the_longest_placeholder_wins():
    assert render("#name #first_name", member(), [], "") == "Ann Lee Ann"


def test_a_letter_after_the_tag_makes_it_another_tag_even_outside_ascii():
    assert render("#nameé #name's", member(), [], "") == "#nameé Ann Lee's"


def test_html_values_are_escaped_and_the_operators_markup_kept():
    hostile = member(first_name="<b>Bob & Co</b>", last_name="", username="")

    rendered = render("<i>Dear</i> #name, #campaign", hostile, [pledge(campaign="<script>")], "HTML")

    assert rendered == "<i>Dear</i> &lt;b&gt;Bob &amp; Co&lt;/b&gt;, &lt;script&gt;"


def test_html_values_cannot_leave_an_attribute():
    hostile = member(first_name='x" onclick="y', last_name="", username="")

    rendered = render('<a href="https://example.com/?n=#first_name">pay</a>', hostile, [], "HTML")

    assert rendered == '<a href="https://example.com/?n=x&quot; onclick=&quot;y">pay</a>'


def test_markdown_v2_escapes_every_special_character_of_a_value():
    hostile = member(first_name="_*[]()~`>#+-=|{}.!\\", last_name="", username="a_b")

    rendered = render("*Hi* #name #username", hostile, [], "MarkdownV2")

    assert rendered == r"*Hi* \_\*\[\]\(\)\~\`\>\#\+\-\=\|\{\}\.\!\\ @a\_b"


def test_markdown_v2_escapes_amounts_dates_and_the_fallback():
    due = date(2030, 1, 5)

    with_pledge = render("#balance #due_date", member(), [pledge("1000.5", "0", due=due)], "MarkdownV2")
    without = render("#balance", member(), [], "MarkdownV2", fallback="n/a.")

    assert with_pledge == r"1,000\.50 USD 05 Jan 2030"
    assert without == r"n/a\."


def test_plain_text_values_are_not_escaped():
    hostile = member(first_name="<b>Bob & Co</b>", last_name="_x_", username="")

    assert render("#name", hostile, [], "") == "<b>Bob & Co</b> _x_"


def test_an_unknown_parse_mode_is_an_error_not_an_unescaped_send():
    with pytest.raises(ValueError, match="Markdown"):
        render("#name", member(), [], "Markdown")


def test_a_member_without_pledges_gets_the_fallback_for_pledge_placeholders_only():
    text = "#name: #pledge #paid_amount #balance #days_remain #due_date #campaign"

    assert render(text, member(), [], "") == "Ann Lee: - - - - - -"
    assert render(text, member(), [], "", fallback="none") == "Ann Lee: none none none none none none"


def test_several_pledges_are_added_up_and_the_earliest_unpaid_due_date_is_used():
    pledges = [
        pledge("1000", "1000", due=TODAY + timedelta(days=1), campaign="Roof"),  # paid: its date is not due
        pledge("500.25", "100", due=TODAY + timedelta(days=30), campaign="Organ"),
        pledge("250", "0", due=TODAY + timedelta(days=7), campaign="Roof"),
        pledge("100", "0", due=None, campaign=""),
    ]

    rendered = render("#pledge|#paid_amount|#balance|#days_remain|#due_date|#campaign", member(), pledges, "")

    due = (TODAY + timedelta(days=7)).strftime("%d %b %Y")
    assert rendered == f"1,850.25 USD|1,100 USD|750.25 USD|7|{due}|Roof, Organ"


def test_the_first_pledges_currency_is_used_for_sums():
    pledges = [pledge("10", "0", currency="EUR"), pledge("5", "0", currency="EUR")]

    assert render("#pledge", member(), pledges, "") == "15 EUR"


def test_an_overpaid_pledge_does_not_reduce_the_balance_of_another():
    pledges = [pledge("100", "150"), pledge("100", "0")]

    assert render("#balance", member(), pledges, "") == "100 USD"


def test_overdue_days_are_never_negative():
    overdue = pledge("100", "0", due=TODAY - timedelta(days=12))

    rendered = render("#days_remain #due_date", member(), [overdue], "")

    assert rendered == f"0 {(TODAY - timedelta(days=12)).strftime('%d %b %Y')}"


def test_pledges_without_a_due_date_or_balance_get_the_fallback_for_dates():
    pledges = [pledge("100", "100", due=TODAY + timedelta(days=3)), pledge("50", "0", due=None, campaign="")]

    assert render("#days_remain #due_date #campaign", member(), pledges, "") == "- - Roof"


def test_saved_pledges_as_a_queryset(db):
    bot = Bot.objects.create(token="123456:AAE-secret")
    ann = TelegramUser.objects.create(bot=bot, telegram_id=42, first_name="Ann")
    Pledge.objects.create(bot=bot, member=ann, telegram_id=42, amount=Decimal("99.50"), paid_amount=Decimal("0"))

    assert render("#name owes #balance", ann, ann.pledges.all(), "HTML") == "Ann owes 99.50 USD"


def test_unknown_hashtags_are_the_near_misses_of_placeholders():
    text = "#news #balnce #pledge_amount #Name #days_remaining #bal #name #campaigns #balnce #2024 #event"

    assert unknown_hashtags(text) == ["#balnce", "#pledge_amount", "#Name", "#days_remaining", "#campaigns"]


def test_a_text_with_only_placeholders_and_ordinary_hashtags_has_no_unknown_ones():
    assert unknown_hashtags("Hi #name, #news from the #roof: #balance") == []


@pytest.mark.parametrize(
    ("text", "needed"),
    [
        ("Hi #name", False),
        ("#first_name #username #news #pledges", False),
        ("Left: #balance", True),
        ("By #due_date", True),
        ("#campaign", True),
        ("#days_remain", True),
    ],
)
def test_needs_pledge(text, needed):
    assert needs_pledge(text) is needed


def test_the_limits_are_telegrams():
    assert (MAX_TEXT, MAX_CAPTION) == (4096, 1024)


def test_too_long_at_the_limits():
    assert not too_long("x" * 4096, is_caption=False)
    assert too_long("x" * 4097, is_caption=False)
    assert not too_long("x" * 1024, is_caption=True)
    assert too_long("x" * 1025, is_caption=True)


def test_length_is_counted_in_utf16_code_units():
    emoji = "🎉"  # outside the BMP: two UTF-16 code units
    assert visible_length(emoji * 2048) == 4096
    assert not too_long(emoji * 2048, is_caption=False)
    assert too_long(emoji * 2048 + "x", is_caption=False)
    assert too_long("é" * 4096 + "🎉", is_caption=False)
    assert not too_long("é" * 4096, is_caption=False)


def test_trimmed_whitespace_does_not_count():
    assert not too_long("\n" + "x" * 4096 + "  \n", is_caption=False)


def test_html_markup_does_not_count():
    text = "<b>" + "x" * 4090 + "</b> &amp;&lt;&gt;<a href='https://example.com/very/long'>ab</a>"

    assert visible_length(text, "HTML") == 4090 + 1 + 3 + 2
    assert not too_long(text, is_caption=False, parse_mode="HTML")
    assert too_long(text, is_caption=False)


def test_markdown_v2_markup_does_not_count():
    text = r"*bold* _it_ \. \\ [link](https://example.com/a\)b) ||spoiler|| `code`"

    assert visible_length(text, "MarkdownV2") == len(r"bold it . \ link spoiler code")


def test_a_rendered_text_can_become_too_long_through_a_members_values():
    text = "x" * 4090 + " #name"
    short, long = member("Ann", "", ""), member("Bartholomew", "", "")

    assert not too_long(render(text, short, [], "MarkdownV2"), is_caption=False, parse_mode="MarkdownV2")
    assert too_long(render(text, long, [], "MarkdownV2"), is_caption=False, parse_mode="MarkdownV2")
