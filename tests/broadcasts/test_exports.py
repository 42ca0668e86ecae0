"""CSV downloads: the pledges the list shows with its filters and search, and a broadcast's
deliveries (member, state, error in words, sent at), streamed."""

import csv
import io
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission, User
from django.http import StreamingHttpResponse

from bots.models import TelegramUser
from broadcasts.models import Broadcast, Delivery, Pledge

pytestmark = pytest.mark.django_db

PLEDGES_EXPORT = "/admin/broadcasts/pledge/export/"
DELIVERIES_EXPORT = "/admin/broadcasts/delivery/export/"


def rows_of(response) -> list[list[str]]:
    assert response.status_code == 200
    assert isinstance(response, StreamingHttpResponse)
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="')
    text = b"".join(response.streaming_content).decode("utf-8")
    assert text.startswith("\ufeff")
    return list(csv.reader(io.StringIO(text.removeprefix("\ufeff"))))


def test_the_pledges_export_honours_the_lists_filters_and_search(admin_client, bot):
    ann = TelegramUser.objects.create(bot=bot, telegram_id=42, first_name="Ann", last_name="Lee")
    Pledge.objects.create(
        bot=bot, member=ann, telegram_id=42, name="Ann L.", amount=Decimal("1250.50"), campaign="Roof", note="cash"
    )
    Pledge.objects.create(bot=bot, telegram_id=43, name="Bob", amount=Decimal("10"), campaign="Roof")
    Pledge.objects.create(bot=bot, telegram_id=44, name="Ann Other", amount=Decimal("5"), campaign="Organ")

    listed = admin_client.get("/admin/broadcasts/pledge/?campaign=Roof&q=ann")
    rows = rows_of(admin_client.get(PLEDGES_EXPORT + "?campaign=Roof&q=ann"))

    assert f'href="{PLEDGES_EXPORT}?campaign=Roof&amp;q=ann"' in listed.content.decode()
    assert rows == [
        [
            "telegram_id",
            "name",
            "member",
            "amount",
            "paid_amount",
            "balance",
            "currency",
            "due_date",
            "days_overdue",
            "campaign",
            "note",
        ],
        ["42", "Ann L.", "Ann Lee", "1250.50", "0.00", "1250.50", "USD", "", "", "Roof", "cash"],
    ]
    assert [row[0] for row in rows_of(admin_client.get(PLEDGES_EXPORT))[1:]] == ["44", "43", "42"]


def test_the_pledges_export_needs_view_permission(client, bot):
    clerk = User.objects.create_user("clerk", password="x", is_staff=True)
    client.force_login(clerk)

    assert client.get(PLEDGES_EXPORT).status_code == 403
    clerk.user_permissions.add(Permission.objects.get(codename="view_pledge"))
    assert client.get(PLEDGES_EXPORT).status_code == 200


def test_a_broadcasts_deliveries_export_says_who_what_and_when(admin_client, bot):
    broadcast = Broadcast.objects.create(bot=bot, text="Hi")
    other = Broadcast.objects.create(bot=bot, text="Other")
    ann = TelegramUser.objects.create(bot=bot, telegram_id=42, first_name="Ann", username="annie")
    bob = TelegramUser.objects.create(bot=bot, telegram_id=43, first_name="Bob")
    sent_at = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
    Delivery.objects.create(
        broadcast=broadcast, member=ann, chat_id=42, status=Delivery.Status.SENT, attempts=1, sent_at=sent_at
    )
    Delivery.objects.create(
        broadcast=broadcast,
        member=bob,
        chat_id=43,
        status=Delivery.Status.FAILED,
        attempts=1,
        error="The member blocked the bot (Forbidden: bot was blocked by the user)",
        error_class="blocked",
    )
    Delivery.objects.create(broadcast=other, member=ann, chat_id=42)

    listed = admin_client.get(f"/admin/broadcasts/delivery/?broadcast__id__exact={broadcast.pk}")
    response = admin_client.get(f"{DELIVERIES_EXPORT}?broadcast__id__exact={broadcast.pk}")

    assert f'href="{DELIVERIES_EXPORT}?broadcast__id__exact={broadcast.pk}"' in listed.content.decode()
    assert f'filename="broadcast-{broadcast.pk}-deliveries-' in response["Content-Disposition"]
    assert sorted(rows_of(response)[1:]) == [
        ["42", "Ann", "annie", "Sent", "", "", "1", "2026-03-01T09:30:00+00:00"],
        [
            "43",
            "Bob",
            "",
            "Failed",
            "The member blocked the bot (Forbidden: bot was blocked by the user)",
            "blocked the bot",
            "1",
            "",
        ],
    ]
    assert rows_of(admin_client.get(DELIVERIES_EXPORT))[0] == [
        "telegram_id",
        "member",
        "username",
        "state",
        "error",
        "error_kind",
        "attempts",
        "sent_at",
    ]
    assert len(rows_of(admin_client.get(DELIVERIES_EXPORT))) == 4
