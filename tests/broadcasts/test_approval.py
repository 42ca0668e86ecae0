"""Sending needs `broadcasts.send_broadcast`, separate from composing; with BROADCAST_APPROVAL
a broadcast needs another sender's approval before it is sent or scheduled, in the admin and
on the command line; every step is in the admin's history. One run with real clusters."""

import re
from datetime import timedelta
from importlib import import_module
from io import StringIO

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Group, Permission, User
from django.contrib.messages import get_messages
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from bots.models import Bot, TelegramUser
from broadcasts.controls import COMMAND_LINE
from broadcasts.models import Broadcast, Pledge
from broadcasts.tasks import start_broadcast
from queueing.models import JobRecord
from tests.broadcasts.support import compose
from tests.waiting import wait_for

pytestmark = pytest.mark.django_db

Status = Broadcast.Status
START = "broadcasts.tasks.start_broadcast"


@pytest.fixture
def approval(settings):
    settings.BROADCAST_APPROVAL = True


def make_members(bot: Bot, count: int) -> list[TelegramUser]:
    return TelegramUser.objects.bulk_create(
        TelegramUser(bot=bot, telegram_id=1_000_000 + n, first_name=f"M{n}", is_subscribed=True) for n in range(count)
    )


def operator(name: str) -> User:
    """A member of the Operators group the migrations create: composes, and (0009) sends."""
    user = User.objects.create_user(name, password="a long password", is_staff=True)
    user.groups.add(Group.objects.get(name="Operators"))
    return user


def composer(name: str) -> User:
    """May compose broadcasts but not send them."""
    user = User.objects.create_user(name, password="a long password", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="broadcasts", codename__in=["add_broadcast", "change_broadcast", "view_broadcast"]
        )
    )
    return user


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def url(view: str, *args) -> str:
    return reverse(f"admin:broadcasts_broadcast_{view}", args=args)


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def draft(bot: Bot, author: User, **fields) -> Broadcast:
    make_members(bot, 3)
    return Broadcast.objects.create(bot=bot, text="Hello #first_name", created_by=author, **fields)


def history(broadcast: Broadcast) -> list[tuple[str, str]]:
    entries = LogEntry.objects.filter(object_id=str(broadcast.pk)).order_by("pk").select_related("user")
    return [(e.user.username, e.get_change_message()) for e in entries]


# -- the permission ---------------------------------------------------------------------------


def run_migration(name: str, function: str) -> None:
    """A data migration's function on the migrations' own app registry (it changes the app
    configs it is given: Django's own must stay as they are)."""
    apps = MigrationExecutor(connection).loader.project_state().apps
    getattr(import_module(f"broadcasts.migrations.{name}"), function)(apps, connection.schema_editor())


def test_the_operators_group_keeps_sending_with_the_new_permission():
    operators = Group.objects.get(name="Operators")
    assert operators.permissions.filter(codename="send_broadcast").exists()


def test_the_migration_gives_it_only_to_an_operators_group_that_composes():
    send = Permission.objects.get(codename="send_broadcast")
    operators = Group.objects.get(name="Operators")
    operators.permissions.remove(send)
    operators.permissions.remove(Permission.objects.get(codename="change_broadcast"))

    run_migration("0013_approval_and_send_window", "give_operators_send")
    assert not operators.permissions.filter(pk=send.pk).exists()

    operators.permissions.add(Permission.objects.get(codename="change_broadcast"))
    run_migration("0013_approval_and_send_window", "give_operators_send")
    assert operators.permissions.filter(pk=send.pk).exists()


def test_a_composer_without_the_send_permission_sees_why_and_cannot_send(bot):
    author = composer("writer")
    broadcast = draft(bot, author)
    client = logged_in(author)

    page = client.get(url("preview", broadcast.pk)).content.decode()
    response = client.post(url("confirm", broadcast.pk), {"_send": "1"}, follow=True)

    assert 'id="preview-send" disabled' in page
    assert "you may compose broadcasts but not send them" in page
    assert any("you may compose broadcasts but not send them" in m for m in messages_of(response))
    assert not JobRecord.objects.filter(kind=START).exists()


def test_resuming_and_resending_need_the_send_permission_pausing_does_not(bot):
    client = logged_in(composer("writer"))
    broadcast = draft(bot, None)
    Broadcast.objects.filter(pk=broadcast.pk).update(status=Status.SENDING, started_at=timezone.now())

    assert client.post(url("action", broadcast.pk, "pause")).status_code == 302
    assert Broadcast.objects.get(pk=broadcast.pk).status == Status.PAUSED
    progress = client.get(url("progress", broadcast.pk)).content.decode()
    assert url("action", broadcast.pk, "cancel") in progress
    assert url("action", broadcast.pk, "resume") not in progress
    assert client.post(url("action", broadcast.pk, "resume")).status_code == 403
    assert client.post(url("action", broadcast.pk, "retry-failed")).status_code == 403
    assert client.post(url("resend_unknown", broadcast.pk)).status_code == 403
    assert Broadcast.objects.get(pk=broadcast.pk).status == Status.PAUSED


# -- approval in the admin --------------------------------------------------------------------


def test_without_approval_setting_an_operator_sends_at_once(bot):
    author = operator("amina")
    broadcast = draft(bot, author)

    logged_in(author).post(url("confirm", broadcast.pk), {"_send": "1"})

    assert JobRecord.objects.get(kind=START).args == [broadcast.pk]
    assert history(broadcast) == [("amina", "Sent.")]


def test_an_unapproved_broadcast_is_refused_then_sent_after_another_operator_approves(bot, approval):
    author, checker = operator("amina"), operator("bekele")
    broadcast = draft(bot, author)
    as_author, as_checker = logged_in(author), logged_in(checker)

    page = as_author.get(url("preview", broadcast.pk)).content.decode()
    refused = as_author.post(url("confirm", broadcast.pk), {"_send": "1"}, follow=True)

    assert 'id="preview-approve"' not in page and 'id="preview-send" disabled' in page
    assert "It needs approval first" in page
    assert any("It needs approval first" in m for m in messages_of(refused))
    assert not JobRecord.objects.filter(kind=START).exists()
    assert as_author.post(url("approve", broadcast.pk)).status_code == 302
    assert Broadcast.objects.get(pk=broadcast.pk).approved_by is None

    assert 'id="preview-approve"' in as_checker.get(url("preview", broadcast.pk)).content.decode()
    as_checker.post(url("approve", broadcast.pk))
    as_author.post(url("confirm", broadcast.pk), {"_send": "1"})

    broadcast.refresh_from_db()
    assert broadcast.approved_by == checker and broadcast.approved_at is not None
    assert JobRecord.objects.get(kind=START).args == [broadcast.pk]
    assert history(broadcast) == [("bekele", "Approved."), ("amina", "Sent.")]


def test_only_someone_who_may_send_can_approve(bot, approval):
    broadcast = draft(bot, operator("amina"))
    client = logged_in(composer("writer"))

    page = client.get(url("preview", broadcast.pk)).content.decode()
    client.post(url("approve", broadcast.pk))

    assert 'id="preview-approve"' not in page
    assert Broadcast.objects.get(pk=broadcast.pk).approved_by is None


def test_editing_after_approval_withdraws_it_and_unschedules(bot, approval):
    author, checker = operator("amina"), operator("bekele")
    when = timezone.now() + timedelta(days=1)
    broadcast = draft(bot, author, scheduled_at=when)
    logged_in(checker).post(url("approve", broadcast.pk))
    as_author = logged_in(author)
    as_author.post(url("confirm", broadcast.pk) + "?schedule", {"_schedule": "1"})
    assert Broadcast.objects.get(pk=broadcast.pk).status == Status.SCHEDULED
    local = timezone.localtime(when)

    response = as_author.post(
        url("change", broadcast.pk),
        compose(
            bot,
            title="",
            text="Hello again #first_name",
            scheduled_at_0=local.strftime("%Y-%m-%d"),
            scheduled_at_1=local.strftime("%H:%M:%S"),
        ),
        follow=True,
    )

    broadcast.refresh_from_db()
    assert broadcast.approved_by is None and broadcast.status == Status.DRAFT
    assert "Edited after approval: it needs approving again." in messages_of(response)
    assert [message for _, message in history(broadcast)][-2:] == [
        "Approval withdrawn: edited after approval.",
        "Changed Text.",
    ]
    assert as_author.post(url("confirm", broadcast.pk) + "?schedule", {"_schedule": "1"}).status_code == 302
    assert Broadcast.objects.get(pk=broadcast.pk).status == Status.DRAFT


def test_the_last_editor_cannot_approve_their_own_change(bot, approval):
    author, editor = operator("amina"), operator("bekele")
    broadcast = draft(bot, author)
    logged_in(editor).post(url("change", broadcast.pk), compose(bot, text="Edited by bekele"))

    logged_in(editor).post(url("approve", broadcast.pk))
    assert Broadcast.objects.get(pk=broadcast.pk).approved_by is None

    logged_in(operator("chaltu")).post(url("approve", broadcast.pk))
    assert Broadcast.objects.get(pk=broadcast.pk).approved_by.username == "chaltu"


def test_a_start_job_for_a_broadcast_that_lost_its_approval_sends_nothing(bot, approval):
    broadcast = draft(bot, operator("amina"))

    assert start_broadcast(broadcast.pk) == {"skipped": "awaiting approval"}
    assert Broadcast.objects.get(pk=broadcast.pk).status == Status.DRAFT
    assert not broadcast.deliveries.exists()


def test_composing_from_the_pledges_list_is_in_the_history(bot):
    member = make_members(bot, 1)[0]
    pledge = Pledge.objects.create(bot=bot, member=member, telegram_id=member.telegram_id, amount=10)
    client = logged_in(User.objects.create_superuser("amina", "a@example.org", "a long password"))

    client.post(
        reverse("admin:broadcasts_pledge_changelist"),
        {"action": "broadcast_to_members", "_selected_action": [str(pledge.pk)]},
    )

    assert history(Broadcast.objects.get()) == [("amina", "Composed from selected pledges.")]


# -- approval on the command line -------------------------------------------------------------


def send(*args: str) -> Broadcast:
    out = StringIO()
    call_command("send_broadcast", "--yes", "--text", "Hello #first_name", *args, stdout=out, stderr=StringIO())
    return Broadcast.objects.get(pk=int(out.getvalue().strip()))


def test_send_broadcast_with_approval_on_refuses_without_an_approver(bot, approval, settings):
    settings.TELEGRAM_BOT_TOKEN = ""
    make_members(bot, 2)

    with pytest.raises(CommandError, match=re.escape("Give --approved-by USERNAME")):
        send()

    assert not Broadcast.objects.exists() and not JobRecord.objects.exists()


@pytest.mark.parametrize(
    ("approver", "error"),
    [("nobody", "no user named 'nobody'"), ("writer", "writer may not send broadcasts, so may not approve them.")],
)
def test_send_broadcast_refuses_an_approver_who_may_not_approve(bot, approval, settings, approver, error):
    settings.TELEGRAM_BOT_TOKEN = ""
    make_members(bot, 2)
    composer("writer")

    with pytest.raises(CommandError, match=re.escape(error)):
        send("--approved-by", approver)

    assert not Broadcast.objects.exists()


def test_send_broadcast_with_an_approver_sends_and_records_each_step(bot, approval, settings):
    settings.TELEGRAM_BOT_TOKEN = ""
    make_members(bot, 2)
    operator("bekele")

    broadcast = send("--approved-by", "bekele")

    assert broadcast.approved_by.username == "bekele"
    assert JobRecord.objects.get(kind=START).args == [broadcast.pk]
    assert history(broadcast) == [
        (COMMAND_LINE, "Composed on the command line."),
        ("bekele", "Approved."),
        (COMMAND_LINE, "Sent."),
    ]


def test_the_approver_is_not_the_user_sending(bot, approval, settings):
    settings.TELEGRAM_BOT_TOKEN = ""
    make_members(bot, 2)
    operator("bekele")

    with pytest.raises(CommandError, match="Another operator approves it"):
        send("--approved-by", "bekele", "--user", "bekele")


def test_broadcast_status_says_a_draft_awaits_approval(bot, approval):
    broadcast = draft(bot, operator("amina"))
    out = StringIO()

    call_command("broadcast_status", str(broadcast.pk), stdout=out)

    assert "Awaiting approval (BROADCAST_APPROVAL)." in out.getvalue()


def test_approved_by_with_approval_off_is_a_mistake(bot, settings):
    settings.TELEGRAM_BOT_TOKEN = ""
    make_members(bot, 2)
    operator("bekele")

    with pytest.raises(CommandError, match="approval is off"):
        send("--approved-by", "bekele")


# -- end to end -------------------------------------------------------------------------------


@pytest.mark.e2e
def test_refused_without_approval_then_sent_after_another_operator_approves(
    telegram_bot, fake_telegram, clusters, approval
):
    # Transactional tests empty every table: the migrations' Operators group too.
    run_migration("0006_operators_group", "create_operators")
    run_migration("0013_approval_and_send_window", "give_operators_send")
    members = make_members(telegram_bot, 20)
    author, checker = operator("amina"), operator("bekele")
    broadcast = Broadcast.objects.create(bot=telegram_bot, text="Hello #first_name", created_by=author)
    clusters.start("telegram", TELEGRAM_RATE_LIMIT="1000", BROADCAST_APPROVAL="1")
    as_author = logged_in(author)

    as_author.post(url("confirm", broadcast.pk), {"_send": "1"})
    assert not JobRecord.objects.filter(kind=START).exists()
    logged_in(checker).post(url("approve", broadcast.pk))
    as_author.post(url("confirm", broadcast.pk), {"_send": "1"})

    wait_for(lambda: Broadcast.objects.get(pk=broadcast.pk).status == Status.DONE, timeout=60, what="the end")
    chats = [call.params["chat_id"] for call in fake_telegram.calls("sendMessage") if call.status == 200]
    assert sorted(chats) == sorted(m.telegram_id for m in members)
    assert history(broadcast) == [("bekele", "Approved."), ("amina", "Sent.")]
