"""`pause_broadcast`, `resume_broadcast` and `cancel_broadcast`: the admin's buttons on the
command line (broadcasts.controls, shared), each recorded in the admin's history; and one run
with real clusters paused, resumed and finished from the command line."""

import re
from io import StringIO

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import User
from django.contrib.messages import get_messages
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from bots.models import Bot, TelegramUser
from broadcasts.controls import COMMAND_LINE
from broadcasts.models import Broadcast, Delivery
from broadcasts.sending import fan_out
from broadcasts.tasks import start_broadcast
from queueing.models import JobRecord
from tests.waiting import wait_for

pytestmark = pytest.mark.django_db

Status = Broadcast.Status
START = "broadcasts.tasks.start_broadcast"


def make_members(bot: Bot, count: int) -> list[TelegramUser]:
    return TelegramUser.objects.bulk_create(
        TelegramUser(bot=bot, telegram_id=1_000_000 + n, first_name=f"M{n}", is_subscribed=True) for n in range(count)
    )


def broadcast_in(bot: Bot, status: str, members: int = 3) -> Broadcast:
    make_members(bot, members)
    broadcast = Broadcast.objects.create(bot=bot, text="Hi", status=status, started_at=timezone.now())
    fan_out(broadcast)
    return broadcast


def run(command: str, *args) -> str:
    out = StringIO()
    call_command(command, *[str(a) for a in args], stdout=out)
    return out.getvalue()


def history(broadcast: Broadcast) -> list[tuple[str, str]]:
    entries = LogEntry.objects.filter(object_id=str(broadcast.pk)).order_by("pk").select_related("user")
    return [(e.user.username, e.change_message) for e in entries]


def test_pause_broadcast_pauses_a_sending_broadcast_and_records_who(bot):
    broadcast = broadcast_in(bot, Status.SENDING)

    out = run("pause_broadcast", broadcast.pk)

    assert "Paused: sending stops before its next send." in out
    assert Broadcast.objects.get(pk=broadcast.pk).status == Status.PAUSED
    assert history(broadcast) == [(COMMAND_LINE, "Paused.")]
    command_line = User.objects.get(username=COMMAND_LINE)
    assert not command_line.is_active and not command_line.has_usable_password()


def test_resume_broadcast_enqueues_what_is_left_in_the_named_users_name(bot):
    broadcast = broadcast_in(bot, Status.PAUSED)
    User.objects.create_user("amina")

    run("resume_broadcast", broadcast.pk, "--user", "amina")

    assert Broadcast.objects.get(pk=broadcast.pk).status == Status.SENDING
    assert JobRecord.objects.get(kind=START).args == [broadcast.pk]
    assert history(broadcast) == [("amina", "Resumed.")]


def test_cancel_broadcast_cancels_the_waiting_deliveries(bot):
    broadcast = broadcast_in(bot, Status.SENDING, members=3)
    Delivery.objects.filter(pk=broadcast.deliveries.order_by("pk")[0].pk).update(status=Delivery.Status.SENT)

    out = run("cancel_broadcast", broadcast.pk)

    assert "Cancelled; 2 waiting deliveries will not be sent." in out
    assert sorted(broadcast.deliveries.values_list("status", flat=True)) == ["cancelled", "cancelled", "sent"]
    assert history(broadcast) == [(COMMAND_LINE, "Cancelled; 2 waiting deliveries not sent.")]


@pytest.mark.parametrize(
    ("command", "status", "error"),
    [
        ("pause_broadcast", Status.PAUSED, "Only a sending broadcast can be paused; this one is paused."),
        ("pause_broadcast", Status.DONE, "Only a sending broadcast can be paused; this one is done."),
        ("resume_broadcast", Status.SENDING, "Only a paused broadcast can be resumed; this one is sending."),
        ("resume_broadcast", Status.CANCELLED, "Only a paused broadcast can be resumed; this one is cancelled."),
        ("cancel_broadcast", Status.DONE, "This broadcast is done already."),
        ("cancel_broadcast", Status.CANCELLED, "This broadcast is cancelled already."),
    ],
)
def test_a_broadcast_in_the_wrong_state_is_refused_and_left_alone(bot, command, status, error):
    broadcast = broadcast_in(bot, status)
    before = list(broadcast.deliveries.values_list("status", flat=True))

    with pytest.raises(CommandError, match=re.escape(error)):
        run(command, broadcast.pk)

    assert Broadcast.objects.get(pk=broadcast.pk).status == status
    assert list(broadcast.deliveries.values_list("status", flat=True)) == before
    assert not JobRecord.objects.filter(kind=START).exists()
    assert history(broadcast) == []


@pytest.mark.parametrize("command", ["pause_broadcast", "resume_broadcast", "cancel_broadcast"])
def test_a_broadcast_that_does_not_exist_is_a_clear_error(command):
    with pytest.raises(CommandError, match=re.escape("No broadcast with id 999.")):
        run(command, 999)


def test_an_unknown_user_is_refused_before_anything_changes(bot):
    broadcast = broadcast_in(bot, Status.SENDING)

    with pytest.raises(CommandError, match=re.escape("No user named 'nobody'.")):
        run("pause_broadcast", broadcast.pk, "--user", "nobody")

    assert Broadcast.objects.get(pk=broadcast.pk).status == Status.SENDING


def test_the_admin_buttons_say_and_record_what_the_commands_do(bot, client):
    """One implementation: the admin's refusal reads as the command's error, and its
    history line names the operator."""
    client.force_login(User.objects.create_superuser("operator", "ops@example.com", "a long password"))
    broadcast = broadcast_in(bot, Status.PAUSED)
    action = reverse("admin:broadcasts_broadcast_action", args=[broadcast.pk, "pause"])

    response = client.post(action, follow=True)

    shown = [str(m) for m in get_messages(response.wsgi_request)]
    with pytest.raises(CommandError) as raised:
        run("pause_broadcast", broadcast.pk)
    assert shown == [str(raised.value)]
    client.post(reverse("admin:broadcasts_broadcast_action", args=[broadcast.pk, "resume"]))
    assert history(broadcast) == [("operator", "Resumed.")]


# -- end to end -------------------------------------------------------------------------------


@pytest.mark.e2e
def test_a_broadcast_paused_and_resumed_from_the_command_line_reaches_everyone_once(
    telegram_bot, fake_telegram, clusters
):
    members = make_members(telegram_bot, 60)
    clusters.start("telegram", TELEGRAM_RATE_LIMIT="10")
    broadcast = Broadcast.objects.create(bot=telegram_bot, text="Hello #first_name")
    start_broadcast.enqueue(broadcast.pk)
    wait_for(lambda: len(fake_telegram.calls("sendMessage")) >= 5, timeout=60, what="the first sends")

    run("pause_broadcast", broadcast.pk)

    # The sender stops before its next send and records what it sent: nothing is left sending.
    wait_for(
        lambda: (
            not JobRecord.objects.filter(kind="broadcasts.tasks.send_deliveries").exclude(status="succeeded").exists()
        ),
        timeout=30,
        what="the sender to stop",
    )
    counts = broadcast.counts()
    assert counts["sending"] == 0 and 0 < counts["pending"] < 60
    assert len(fake_telegram.calls("sendMessage")) == counts["sent"]

    run("resume_broadcast", broadcast.pk)

    wait_for(lambda: Broadcast.objects.get(pk=broadcast.pk).status == Status.DONE, timeout=60, what="the end")
    chats = [call.params["chat_id"] for call in fake_telegram.calls("sendMessage") if call.status == 200]
    assert sorted(chats) == sorted(m.telegram_id for m in members)
    assert [message for _, message in history(broadcast)] == ["Paused.", "Resumed."]
