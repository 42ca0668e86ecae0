"""`manage.py send_broadcast` and `manage.py broadcast_status`."""

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from bots.models import Bot, TelegramUser
from broadcasts.models import Audience, Broadcast, Delivery, MessageTemplate, Pledge
from broadcasts.sending import fan_out
from queueing.models import JobRecord
from tests.fake_telegram.objects import make_token

pytestmark = pytest.mark.django_db

START = "broadcasts.tasks.start_broadcast"


@pytest.fixture
def bot(settings) -> Bot:
    settings.TELEGRAM_BOT_TOKEN = ""
    return Bot.objects.create(token=make_token(7200001), webhook_secret=Bot.new_secret())


@pytest.fixture
def subscriber(bot) -> TelegramUser:
    """Someone to send to: send_broadcast refuses an audience of nobody."""
    member = TelegramUser.objects.create(bot=bot, telegram_id=7, first_name="Ann", is_subscribed=True)
    Pledge.objects.create(bot=bot, member=member, telegram_id=7, amount=100, campaign="spring")
    return member


def send(*args: str) -> tuple[Broadcast, str]:
    out, err = StringIO(), StringIO()
    call_command("send_broadcast", "--yes", *args, stdout=out, stderr=err)
    return Broadcast.objects.get(pk=int(out.getvalue().strip())), err.getvalue()


def status(*args: str) -> str:
    out = StringIO()
    call_command("broadcast_status", *args, stdout=out)
    return out.getvalue()


def test_send_broadcast_creates_the_broadcast_and_enqueues_its_start(bot, subscriber):
    broadcast, _ = send("--text", "Hello #first_name", "--parse-mode", "html", "--title", "Spring")

    assert (broadcast.bot, broadcast.text, broadcast.parse_mode, broadcast.title) == (
        bot,
        "Hello #first_name",
        "HTML",
        "Spring",
    )
    assert broadcast.audience == Audience.SUBSCRIBERS and broadcast.status == Broadcast.Status.DRAFT
    job = JobRecord.objects.get(kind=START)
    assert job.args == [broadcast.pk]


def test_send_broadcast_with_a_template_and_an_audience(bot, subscriber):
    template = MessageTemplate.objects.create(name="reminder", text="You owe #balance", parse_mode="MarkdownV2")

    broadcast, _ = send(
        "--template", "reminder", "--audience", "campaign", "--audience-value", "spring", "--bot", str(bot.telegram_id)
    )

    assert broadcast.template == template and broadcast.text == ""
    assert (broadcast.audience, broadcast.audience_value) == (Audience.CAMPAIGN, "spring")
    assert broadcast.effective_parse_mode == "MarkdownV2"


def test_send_broadcast_at_a_time_schedules_it_without_enqueueing(bot, subscriber):
    when = (timezone.now() + timedelta(hours=3)).replace(microsecond=0)

    broadcast, err = send("--text", "Later", "--at", when.isoformat())

    assert broadcast.status == Broadcast.Status.SCHEDULED and broadcast.scheduled_at == when
    assert "Scheduled for" in err
    assert not JobRecord.objects.filter(kind=START).exists()


def test_a_misspelt_placeholder_is_a_warning_not_an_error(bot, subscriber):
    broadcast, err = send("--text", "You owe #balnce")

    assert "#balnce is not a placeholder" in err
    assert JobRecord.objects.filter(kind=START, args=[broadcast.pk]).exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--template", "nope"], "No message template named 'nope'. Known: none yet."),
        (["--text", "x", "--audience", "everyone"], "Unknown audience 'everyone'. Valid audiences: subscribers, "),
        (["--text", "x", "--audience", "language"], "The language audience needs --audience-value."),
        (["--text", "x", "--at", "next tuesday"], "--at 'next tuesday' is not an ISO 8601 date and time"),
        (["--text", "x", "--at", "2026-02-30T10:00"], "is not an ISO 8601 date and time"),
        (["--text", "x", "--at", "2001-01-01T10:00+00:00"], "--at 2001-01-01T10:00+00:00 is in the past."),
        (["--text", "x", "--parse-mode", "markdown"], "Unknown parse mode 'markdown'"),
        (["--text", "x", "--bot", "999"], "No such active bot."),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(bot, subscriber, args, message):
    with pytest.raises(CommandError) as refused:
        send(*args)

    assert message in str(refused.value)
    assert not Broadcast.objects.exists()


def test_text_or_template_is_required(bot):
    with pytest.raises(CommandError, match="one of the arguments --text --template is required"):
        send()


def test_broadcast_status_prints_counts_and_state(bot):
    TelegramUser.objects.bulk_create(
        TelegramUser(bot=bot, telegram_id=10 + n, first_name=f"M{n}", is_subscribed=True) for n in range(4)
    )
    broadcast = Broadcast.objects.create(bot=bot, title="Spring", text="Hi", status=Broadcast.Status.SENDING)
    fan_out(broadcast)
    first, second = broadcast.deliveries.order_by("pk")[:2]
    Delivery.objects.filter(pk=first.pk).update(status=Delivery.Status.SENT, sent_at=timezone.now())
    Delivery.objects.filter(pk=second.pk).update(status=Delivery.Status.FAILED)

    text = status(str(broadcast.pk))
    data = json.loads(status(str(broadcast.pk), "--json"))

    assert "Spring (All subscribers): sending" in text
    assert "2 of 4 finished (50.0%)" in text
    assert "pending 2  sending 0  sent 1  retrying 0  failed 1" in text
    assert data["status"] == "sending" and data["title"] == "Spring"
    assert data["counts"]["sent"] == 1 and data["counts"]["failed"] == 1 and data["counts"]["total"] == 4
    assert data["percent"] == 50.0


def test_broadcast_status_of_an_unknown_id():
    with pytest.raises(CommandError, match="No broadcast with id 404"):
        status("404")


def test_broadcast_status_shows_the_unknown_and_why_sending_waits(bot):
    TelegramUser.objects.bulk_create(
        TelegramUser(bot=bot, telegram_id=10 + n, first_name=f"M{n}", is_subscribed=True) for n in range(3)
    )
    until = timezone.now() + timedelta(seconds=40)
    broadcast = Broadcast.objects.create(
        bot=bot,
        text="Hi",
        status=Broadcast.Status.SENDING,
        stall_reason="waiting 40 s for Telegram's flood control",
        stalled_until=until,
    )
    fan_out(broadcast)
    first, second = broadcast.deliveries.order_by("pk")[:2]
    Delivery.objects.filter(pk=first.pk).update(status=Delivery.Status.UNKNOWN)
    Delivery.objects.filter(pk=second.pk).update(status=Delivery.Status.SKIPPED)

    text = status(str(broadcast.pk))
    data = json.loads(status(str(broadcast.pk), "--json"))

    assert "1 unknown: Telegram may or may not have delivered them." in text and "Resend to unknown" in text
    assert f"Stalled: waiting 40 s for Telegram's flood control (until {until.isoformat()})" in text
    assert (data["counts"]["unknown"], data["counts"]["skipped"], data["counts"]["sent"]) == (1, 1, 0)
    assert data["stall_reason"] == "waiting 40 s for Telegram's flood control"
    assert data["stalled_until"] == until.isoformat()
