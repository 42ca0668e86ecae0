"""Who each audience reaches (broadcasts.audiences.recipients), on one set of members: every
audience leaves out the members who blocked the bot or opted out, and another bot's members."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from bots.models import Bot, OperatorLink, TelegramUser
from broadcasts.audiences import audience_members, recipients
from broadcasts.models import Audience, Broadcast, Pledge
from broadcasts.sending import fan_out
from tests.fake_telegram.objects import make_token

pytestmark = pytest.mark.django_db

YESTERDAY = timezone.localdate() - timedelta(days=1)
NEXT_MONTH = timezone.localdate() + timedelta(days=30)


@pytest.fixture
def members(bot, settings) -> dict[str, TelegramUser]:
    """By first name:
    ann  owes 100, due yesterday (overdue), campaign Roof, language en
    bob  paid his 100 in full, language DE
    cy   owes 40 of 50, due next month, campaign School, language de
    di   has no pledge, no language
    eve  paid one pledge and owes on another (both Roof)
    ed   owes and is overdue, but blocked the bot
    fay  has no pledge and opted out"""
    settings.OPERATOR_TELEGRAM_IDS = []
    made = {}
    for n, (name, language, state) in enumerate(
        [
            ("ann", "en", {}),
            ("bob", "DE", {}),
            ("cy", "de", {}),
            ("di", "", {}),
            ("eve", "en", {}),
            ("ed", "en", {"is_blocked": True}),
            ("fay", "en", {"is_subscribed": False, "opted_out_at": timezone.now()}),
        ]
    ):
        made[name] = TelegramUser.objects.create(
            bot=bot, telegram_id=500 + n, first_name=name, language_code=language, **{"is_subscribed": True, **state}
        )
    pledge(made["ann"], 100, 0, due_date=YESTERDAY, campaign="Roof")
    pledge(made["bob"], 100, 100)
    pledge(made["cy"], 50, 10, due_date=NEXT_MONTH, campaign="School")
    pledge(made["eve"], 30, 30, campaign="Roof")
    pledge(made["eve"], 20, 5, campaign="Roof")
    pledge(made["ed"], 100, 0, due_date=YESTERDAY, campaign="Roof")
    # Another bot's member who fits every audience: never among this bot's recipients.
    other = Bot.objects.create(token=make_token(7500001), webhook_secret=Bot.new_secret())
    stranger = TelegramUser.objects.create(bot=other, telegram_id=500, language_code="en", is_subscribed=True)
    pledge(stranger, 100, 0, due_date=YESTERDAY, campaign="Roof")
    return made


def pledge(member: TelegramUser, amount, paid, **fields) -> Pledge:
    return Pledge.objects.create(
        bot=member.bot,
        member=member,
        telegram_id=member.telegram_id,
        amount=Decimal(amount),
        paid_amount=Decimal(paid),
        **fields,
    )


def reached(bot: Bot, audience: str, value: str = "") -> list[str]:
    """The recipients' names, checked against the deliveries the fan-out's INSERT ... SELECT
    creates from the same queryset."""
    broadcast = Broadcast.objects.create(bot=bot, text="Hi", audience=audience, audience_value=value)
    names = sorted(recipients(broadcast).values_list("first_name", flat=True))
    fan_out(broadcast)
    assert sorted(broadcast.deliveries.values_list("member__first_name", flat=True)) == names
    return names


@pytest.mark.parametrize(
    ("audience", "value", "expected"),
    [
        (Audience.SUBSCRIBERS, "", ["ann", "bob", "cy", "di", "eve"]),
        (Audience.BALANCE_DUE, "", ["ann", "cy", "eve"]),
        (Audience.OVERDUE, "", ["ann"]),
        (Audience.FULLY_PAID, "", ["bob"]),
        (Audience.NO_PLEDGE, "", ["di"]),
        (Audience.CAMPAIGN, "Roof", ["ann", "eve"]),
        (Audience.CAMPAIGN, "School", ["cy"]),
        (Audience.CAMPAIGN, "roof", []),  # campaigns match exactly
        (Audience.LANGUAGE, "de", ["bob", "cy"]),  # language codes match in any case
        (Audience.LANGUAGE, "fr", []),
    ],
)
def test_each_audience_reaches_its_subscribed_members(bot, members, audience, value, expected):
    assert reached(bot, audience, value) == expected


def test_hand_picked_reaches_the_picked_members_still_subscribed(bot, members):
    broadcast = Broadcast.objects.create(bot=bot, text="Hi", audience=Audience.HAND_PICKED)
    broadcast.members.set([members["bob"], members["di"], members["ed"], members["fay"]])
    Broadcast.objects.create(bot=bot, text="Hi", audience=Audience.HAND_PICKED).members.set([members["ann"]])

    assert sorted(recipients(broadcast).values_list("first_name", flat=True)) == ["bob", "di"]
    assert sorted(audience_members(broadcast).values_list("first_name", flat=True)) == ["bob", "di", "ed", "fay"]


def test_staff_reaches_linked_operators_and_the_configured_ids(bot, members, settings):
    user = User.objects.create_user("operator")
    OperatorLink.objects.create(user=user, bot=bot, member=members["cy"], code=OperatorLink.new_code())
    OperatorLink.objects.create(user=user, bot=bot, member=None, code=OperatorLink.new_code())  # not linked yet
    OperatorLink.objects.create(user=user, bot=bot, member=members["ed"], code=OperatorLink.new_code())

    assert reached(bot, Audience.STAFF) == ["cy"]
    settings.OPERATOR_TELEGRAM_IDS = [members["ann"].telegram_id, members["fay"].telegram_id]
    assert reached(bot, Audience.STAFF) == ["ann", "cy"]


def test_with_no_operator_at_all_staff_reaches_nobody(bot, members):
    assert reached(bot, Audience.STAFF) == []


def test_audience_members_adds_those_left_out_to_the_recipients(bot, members):
    broadcast = Broadcast.objects.create(bot=bot, text="Hi", audience=Audience.OVERDUE)

    assert sorted(audience_members(broadcast).values_list("first_name", flat=True)) == ["ann", "ed"]
