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


# -- confirmation, --dry-run, --yes, --button ----------------------------------------------------


class Terminal(StringIO):
    """Standard input as a person at a terminal types it."""

    def isatty(self) -> bool:
        return True


def run(*args: str, stdin: StringIO) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("send_broadcast", *args, stdin=stdin, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_dry_run_prints_the_summary_and_creates_nothing(bot, subscriber):
    TelegramUser.objects.create(bot=bot, telegram_id=8, first_name="Bo", is_subscribed=False, is_blocked=True)

    out, err = run("--text", "Hello #first_name, #balance to go", "--dry-run", stdin=StringIO())

    assert "Audience: All subscribers: 1 recipients" in out
    assert "Left out: 1 blocked the bot, 0 opted out, 0 never subscribed" in out
    assert "Estimated time: under a second" in out
    assert "---\nHello Ann, 100 USD to go\n---" in out
    assert "Dry run: nothing was created or sent." in err
    assert not Broadcast.objects.exists() and not JobRecord.objects.exists()


def test_without_yes_a_non_interactive_input_is_refused(bot, subscriber):
    with pytest.raises(CommandError) as refused:
        run("--text", "Hi", stdin=StringIO("y\n"))

    assert "nobody can confirm on a non-interactive input. Add --yes" in str(refused.value)
    assert not Broadcast.objects.exists() and not JobRecord.objects.exists()


def test_at_a_terminal_it_asks_and_sends_on_yes(bot, subscriber):
    out, err = run("--text", "Hi", stdin=Terminal("y\n"))

    assert "Audience: All subscribers: 1 recipients" in err and "Send to 1 recipients now? [y/N]" in err
    broadcast = Broadcast.objects.get(pk=int(out))
    assert JobRecord.objects.get(kind=START).args == [broadcast.pk]


def test_at_a_terminal_anything_but_yes_sends_nothing(bot, subscriber):
    with pytest.raises(CommandError, match=r"^Not sent\. Nothing was created\.$"):
        run("--text", "Hi", stdin=Terminal("\n"))

    assert not Broadcast.objects.exists() and not JobRecord.objects.exists()


def test_yes_sends_without_asking(bot, subscriber):
    out, err = run("--text", "Hi", "--yes", stdin=StringIO())

    assert "[y/N]" not in err
    assert JobRecord.objects.get(kind=START).args == [int(out)]


def test_buttons_are_given_as_text_equals_url(bot, subscriber):
    broadcast, _ = send(
        "--text",
        "Hi",
        "--button",
        "Pay now=https://example.org/pay?ref=bc",
        "--button",
        "Channel=tg://resolve?domain=news",
        "--button",
        "Site = http://example.org",
    )

    assert broadcast.buttons == [
        {"text": "Pay now", "url": "https://example.org/pay?ref=bc"},
        {"text": "Channel", "url": "tg://resolve?domain=news"},
        {"text": "Site", "url": "http://example.org"},
    ]


@pytest.mark.parametrize(
    "value, message",
    [
        ("Pay", "'Pay': write TEXT=URL"),
        ("=https://example.org", "write TEXT=URL"),
        ("Pay=javascript:alert(1)", "'javascript:alert(1)' is not an http://, https:// or tg:// link."),
        ("Pay=ftp://example.org/x", "is not an http://, https:// or tg:// link."),
        ("Pay=tg://", "is not an http://, https:// or tg:// link."),
    ],
)
def test_a_bad_button_is_refused(bot, subscriber, value, message):
    with pytest.raises(CommandError, match="argument --button") as refused:
        send("--text", "Hi", "--button", value)

    assert message in str(refused.value)
    assert not Broadcast.objects.exists()
