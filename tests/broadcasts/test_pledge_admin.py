"""The pledges list operators work from: totals of what the filters select, the imported
name, overdue in days, amounts on one line, a draft broadcast to the selected members, and
importing a file in a browser."""

from datetime import date, timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission, User
from django.contrib.messages import get_messages
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from bots.models import Bot, TelegramUser
from broadcasts.models import Audience, Broadcast, Pledge
from tests.waiting import wait_for

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/broadcasts/pledge/"


def pledge(bot: Bot, telegram_id: int, amount: str, paid: str = "0", **fields) -> Pledge:
    return Pledge.objects.create(
        bot=bot, telegram_id=telegram_id, amount=Decimal(amount), paid_amount=Decimal(paid), **fields
    )


def totals(response) -> list[tuple]:
    return [(t["currency"], t["pledges"], t["pledged"], t["paid"], t["balance"]) for t in response.context["totals"]]


def test_the_totals_are_those_of_the_filtered_pledges_per_currency_in_one_query(admin_client, bot):
    pledge(bot, 1, "100", "30", campaign="Roof")
    pledge(bot, 2, "50", "60", campaign="Roof")  # overpaid: no negative balance
    pledge(bot, 3, "1000", "0", campaign="Organ")
    pledge(bot, 4, "20", "5", currency="EUR", campaign="Roof")

    everything = admin_client.get(CHANGELIST)
    with CaptureQueriesContext(connection) as queries:
        roof = admin_client.get(CHANGELIST + "?campaign=Roof&q=1")

    assert totals(everything) == [
        ("EUR", 1, Decimal("20"), Decimal("5"), Decimal("15")),
        ("USD", 3, Decimal("1150"), Decimal("90"), Decimal("1070")),
    ]
    assert totals(roof) == [("USD", 1, Decimal("100"), Decimal("30"), Decimal("70"))]
    assert len([q for q in queries.captured_queries if "SUM(" in q["sql"].upper()]) == 1
    html = everything.content.decode()
    assert '<tr data-currency="USD"><td>USD</td><td class="amount">3</td>' in html
    assert "1,150.00" in html and "1,070.00" in html


def test_an_overdue_pledge_says_how_many_days_overdue(admin_client, bot):
    today = date.today()
    pledge(bot, 1, "10", due_date=today - timedelta(days=18))
    pledge(bot, 2, "10", due_date=today - timedelta(days=1))
    pledge(bot, 3, "10", "10", due_date=today - timedelta(days=5))  # paid: not overdue
    pledge(bot, 4, "10", due_date=today + timedelta(days=9))

    rows = {p.telegram_id: p for p in admin_client.get(CHANGELIST).context["cl"].result_list}
    html = admin_client.get(CHANGELIST).content.decode()

    assert '<td class="field-days_remaining_display">18 days overdue</td>' in html
    assert '<td class="field-days_remaining_display">1 day overdue</td>' in html
    assert '<td class="field-days_remaining_display">9</td>' in html
    assert "(overdue)" not in html
    assert (rows[1].days_overdue, rows[3].days_overdue, rows[4].days_overdue) == (18, 0, 0)


def test_the_name_is_listed_and_searchable_and_amounts_do_not_wrap(admin_client, bot):
    pledge(bot, 1, "1250.5", name="Donor One")
    pledge(bot, 2, "10", name="Someone Else")

    response = admin_client.get(CHANGELIST + "?q=donor")

    assert [p.telegram_id for p in response.context["cl"].result_list] == [1]
    html = response.content.decode()
    assert (
        '<th class="field-name_display">Donor One</th>' in html or "<td>Donor One</td>" in html or "Donor One" in html
    )
    assert '<td class="field-amount_display">1,250.50 USD</td>' in html
    assert "#result_list td.field-amount_display" in html and "white-space: nowrap" in html


def act(client, ids, action="broadcast_to_members", **extra):
    data = {"action": action, "_selected_action": [str(i) for i in ids], **extra}
    return client.post(CHANGELIST, data)


def test_broadcast_to_these_members_makes_a_hand_picked_draft_of_those_who_started(admin_client, bot):
    ann = TelegramUser.objects.create(bot=bot, telegram_id=1, first_name="Ann")
    bob = TelegramUser.objects.create(bot=bot, telegram_id=2, first_name="Bob")
    TelegramUser.objects.create(bot=bot, telegram_id=5, first_name="Not selected")
    chosen = [
        pledge(bot, 1, "10", member=ann, campaign="Roof"),
        pledge(bot, 1, "20", member=ann, campaign="Organ"),  # Ann twice: one member
        pledge(bot, 2, "10", member=bob),
        pledge(bot, 3, "10"),  # not started: no member to send to
    ]
    pledge(bot, 5, "10", member=TelegramUser.objects.get(telegram_id=5))

    response = act(admin_client, [p.pk for p in chosen])

    broadcast = Broadcast.objects.get()
    assert response.status_code == 302
    assert response.url == reverse("admin:broadcasts_broadcast_change", args=[broadcast.pk])
    assert (broadcast.bot, broadcast.audience, broadcast.status) == (bot, Audience.HAND_PICKED, Broadcast.Status.DRAFT)
    assert set(broadcast.members.all()) == {ann, bob}
    assert broadcast.created_by.username == "admin"
    assert broadcast.title == "To 2 members of selected pledges"
    assert admin_client.get(response.url).status_code == 200


def test_broadcast_to_these_members_refuses_no_members_or_two_bots(admin_client, bot):
    other = Bot.objects.create(token="654321:AAE-other")
    ann = TelegramUser.objects.create(bot=bot, telegram_id=1)
    zed = TelegramUser.objects.create(bot=other, telegram_id=1)
    not_started = pledge(bot, 3, "10")
    mixed = [pledge(bot, 1, "10", member=ann), pledge(other, 1, "10", member=zed)]

    for ids, problem in [
        ([not_started.pk], "no pledge whose member has pressed /start"),
        ([p.pk for p in mixed], "pledges of more than one bot"),
    ]:
        response = act(admin_client, ids)
        assert response.status_code == 302
        assert [str(m) for m in get_messages(response.wsgi_request)][-1] == (
            f"Nothing to broadcast to: the selection has {problem}."
        )
    assert Broadcast.objects.count() == 0


def test_broadcast_to_these_members_needs_the_right_to_add_broadcasts(client, bot):
    clerk = User.objects.create_user("clerk", password="x", is_staff=True)
    clerk.user_permissions.add(Permission.objects.get(codename="view_pledge"))
    client.force_login(clerk)
    p = pledge(bot, 1, "10", member=TelegramUser.objects.create(bot=bot, telegram_id=1))

    act(client, [p.pk])

    assert Broadcast.objects.count() == 0


def test_importing_a_file_then_confirming_it_in_a_browser(request, live_server, bot, tmp_path):
    """Skipped when selenium or Chromium is missing (see tests/browser.py)."""
    driver = request.getfixturevalue("staff_browser")
    from selenium.webdriver.common.by import By

    csv = tmp_path / "pledges.csv"
    csv.write_text("telegram_id,amount,paid_amount,due_date,name\n42,100,0,,Ann Lee\n43,50,0,,Bob\nx,1,0,,Bad\n")
    driver.get(live_server.url + reverse("admin:broadcasts_pledge_import"))
    driver.find_element(By.NAME, "file").send_keys(str(csv))
    driver.find_element(By.CSS_SELECTOR, "#import-form input[type=submit]").click()
    wait_for(lambda: driver.find_elements(By.ID, "confirm-import"), what="the summary")

    assert driver.find_element(By.CSS_SELECTOR, "[data-count=created]").text == "2"
    assert "x,1,0,,Bad" in driver.find_element(By.ID, "import-errors").text
    assert Pledge.objects.count() == 0
    driver.save_screenshot(str(request.getfixturevalue("screenshots") / "pledge_import_summary.png"))

    driver.find_element(By.ID, "confirm-import").click()
    wait_for(lambda: driver.current_url.endswith(CHANGELIST), what="the pledges list")

    assert "Imported: 2 created, 0 updated, 0 unchanged. Skipped 1 line with errors." in driver.page_source
    assert sorted(Pledge.objects.values_list("name", flat=True)) == ["Ann Lee", "Bob"]
    driver.save_screenshot(str(request.getfixturevalue("screenshots") / "pledge_list.png"))
