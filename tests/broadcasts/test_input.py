"""Bad input from operators is refused with a clear error and changes nothing: empty text, an
audience of nobody, a campaign or language nobody has, a staff audience with no operators, in
`send_broadcast`, the broadcast form and the admin's send and schedule buttons."""

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from bots.models import Bot, TelegramUser
from broadcasts.audiences import recipients
from broadcasts.models import Audience, Broadcast, MessageTemplate, Pledge
from broadcasts.sending import fan_out
from broadcasts.tasks import start_broadcast
from queueing.models import JobRecord
from tests.broadcasts.support import assert_draft_refused, compose, messages_of

pytestmark = pytest.mark.django_db


@pytest.fixture
def bot(bot, settings) -> Bot:
    """Three members with pledges: two campaigns, two languages; no operators."""
    settings.TELEGRAM_BOT_TOKEN = ""
    settings.OPERATOR_TELEGRAM_IDS = []
    for n, (campaign, language) in enumerate([("Spring Appeal", "en"), ("Building Fund", "de"), ("", "en")]):
        member = TelegramUser.objects.create(
            bot=bot, telegram_id=100 + n, first_name=f"M{n}", language_code=language, is_subscribed=True
        )
        Pledge.objects.create(bot=bot, member=member, telegram_id=100 + n, amount=50, campaign=campaign)
    return bot


def send_broadcast(*args: str) -> str:
    out = StringIO()
    call_command("send_broadcast", "--yes", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


# -- send_broadcast ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (["--text", ""], "The message is empty"),
        (["--text", "  \n "], "The message is empty"),
        (["--template", "blank"], "The message is empty"),
        (["--text", "x", "--audience", "staff"], "No operators are configured for the staff audience"),
        (["--text", "x", "--audience", "fully_paid"], "Nobody is in this audience (Fully paid)"),
        (
            ["--text", "x", "--audience", "campaign", "--audience-value", "No Such Campaign"],
            "No campaign named “No Such Campaign”. Campaigns of this bot: “Building Fund”, “Spring Appeal”.",
        ),
        (
            ["--text", "x", "--audience", "campaign", "--audience-value", "spring appeal"],
            "Did you mean “Spring Appeal”?",
        ),
        (
            ["--text", "x", "--audience", "campaign", "--audience-value", "Buildng Fund"],
            "Did you mean “Building Fund”?",
        ),
        (
            ["--text", "x", "--audience", "language", "--audience-value", "fr"],
            "No subscriber has the language code “fr”. Language codes of subscribers: en (2), de (1).",
        ),
    ],
)
def test_send_broadcast_refuses_bad_input_and_creates_nothing(bot, args, message):
    MessageTemplate.objects.create(name="blank", text="   ")

    with pytest.raises(CommandError) as refused:
        send_broadcast(*args)

    assert message in str(refused.value) and "Nothing was created." in str(refused.value)
    assert not Broadcast.objects.exists() and not JobRecord.objects.exists()


def test_a_scheduled_send_to_nobody_is_refused_too(bot):
    when = (timezone.now() + timedelta(hours=1)).isoformat()

    with pytest.raises(CommandError, match="Nobody is in this audience"):
        send_broadcast("--text", "x", "--audience", "overdue", "--at", when)

    assert not Broadcast.objects.exists()


def test_a_campaign_and_a_language_that_exist_are_sent(bot):
    by_campaign = send_broadcast("--text", "x", "--audience", "campaign", "--audience-value", "Building Fund")
    by_language = send_broadcast("--text", "x", "--audience", "language", "--audience-value", "EN")

    assert recipients(Broadcast.objects.get(pk=by_campaign)).count() == 1
    assert recipients(Broadcast.objects.get(pk=by_language)).count() == 2


def test_the_staff_audience_goes_to_the_configured_operators(bot, settings):
    settings.OPERATOR_TELEGRAM_IDS = [101, 999]

    broadcast = Broadcast.objects.get(pk=send_broadcast("--text", "x", "--audience", "staff"))

    assert list(recipients(broadcast).values_list("telegram_id", flat=True)) == [101]


# -- the staff audience with no operators inside the job --------------------------------------


def test_a_staff_broadcast_with_no_operators_configured_finishes_empty_instead_of_failing(bot):
    """Operators were configured when it was scheduled and are not any more: the fan-out used to
    raise a bare EmptyResultSet on every attempt, leaving the broadcast a draft for ever."""
    broadcast = Broadcast.objects.create(bot=bot, text="x", audience=Audience.STAFF)

    assert fan_out(broadcast) == 0
    start_broadcast(broadcast.pk)

    broadcast.refresh_from_db()
    assert broadcast.status == Broadcast.Status.DONE and not broadcast.deliveries.exists()


# -- the admin --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields, field, error",
    [
        ({"audience": Audience.STAFF}, "audience", "set OPERATOR_TELEGRAM_IDS"),
        (
            {"audience": Audience.CAMPAIGN, "audience_value": "Spring"},
            "audience_value",
            "No campaign named “Spring”. Did you mean “Spring Appeal”?",
        ),
        ({"audience": Audience.LANGUAGE, "audience_value": "fr"}, "audience_value", "Language codes of subscribers"),
    ],
)
def test_the_form_refuses_an_audience_that_names_nobody(staff, bot, fields, field, error):
    assert_draft_refused(staff, bot, fields, field, error)


def test_the_form_saves_a_draft_whose_audience_is_empty_today(staff, bot):
    """Pledges may be marked paid before it goes out: only sending it to nobody is refused."""
    response = staff.post(reverse("admin:broadcasts_broadcast_add"), compose(bot, audience=Audience.FULLY_PAID))

    assert response.status_code == 302
    assert Broadcast.objects.get().audience == Audience.FULLY_PAID


@pytest.mark.parametrize("button", ["_send", "_schedule"])
@pytest.mark.parametrize(
    "fields, message",
    [
        ({"audience": Audience.FULLY_PAID}, "Not sent: Nobody is in this audience (Fully paid)"),
        ({"audience": Audience.CAMPAIGN, "audience_value": "Gone"}, "Not sent: No campaign named “Gone”."),
        ({"audience": Audience.STAFF}, "Not sent: No operators are configured for the staff audience"),
        ({"text": "", "template_name": "blank"}, "Not sent: The message is empty"),
    ],
)
def test_send_and_schedule_refuse_what_would_reach_nobody(staff, bot, button, fields, message):
    fields = {"text": "Hi", **fields}
    if template_name := fields.pop("template_name", None):
        fields["template"] = MessageTemplate.objects.create(name=template_name, text=" ")
    broadcast = Broadcast.objects.create(bot=bot, scheduled_at=timezone.now() + timedelta(hours=1), **fields)
    preview_url = reverse("admin:broadcasts_broadcast_preview", args=[broadcast.pk])

    confirm_url = reverse("admin:broadcasts_broadcast_confirm", args=[broadcast.pk])

    response = staff.post(confirm_url, {button: "1"}, follow=True)

    assert response.redirect_chain[-1][0] == preview_url
    assert any(message in m for m in messages_of(response)), messages_of(response)
    broadcast.refresh_from_db()
    assert broadcast.status == Broadcast.Status.DRAFT and not JobRecord.objects.exists()


def test_the_preview_says_why_it_cannot_be_sent_and_offers_no_send_button(staff, bot):
    broadcast = Broadcast.objects.create(
        bot=bot, text="Hi", audience=Audience.CAMPAIGN, audience_value="Spring", scheduled_at=timezone.now()
    )

    page = staff.get(reverse("admin:broadcasts_broadcast_preview", args=[broadcast.pk])).content.decode()

    assert 'id="preview-refusal"' in page and "Did you mean “Spring Appeal”?" in page
    assert 'name="_send"' not in page and 'name="_schedule"' not in page
