"""Least privilege in the admin: the queue dashboard and its JSON need a permission of their
own, read-only pages answer 405 to anything but GET, and the default Operators group holds
what running campaigns needs and nothing more."""

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.urls import reverse

from bots.models import Bot
from broadcasts.models import Broadcast
from tests.fake_telegram import make_token

pytestmark = pytest.mark.django_db

DASHBOARD_PAGES = [reverse("queueing:dashboard"), reverse("queueing:dashboard_json")]


def staff_with(client, *permissions: str, username: str = "staff"):
    user = User.objects.create_user(username, password="a long password", is_staff=True)
    for name in permissions:
        app_label, codename = name.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    client.force_login(user)
    return client


@pytest.mark.parametrize("url", DASHBOARD_PAGES)
def test_staff_without_the_dashboard_permission_are_refused(client, url):
    assert staff_with(client).get(url).status_code == 403


def test_staff_without_the_permission_see_no_link_to_the_dashboard(client):
    index = staff_with(client).get(reverse("admin:index"))
    assert index.status_code == 200
    assert reverse("queueing:dashboard") not in index.content.decode()


@pytest.mark.parametrize("url", DASHBOARD_PAGES)
def test_the_dashboard_permission_alone_opens_the_dashboard(client, url):
    assert staff_with(client, "queueing.view_queue_dashboard").get(url).status_code == 200


@pytest.mark.parametrize("url", DASHBOARD_PAGES)
def test_anonymous_visitors_are_sent_to_the_login(client, url):
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


@pytest.mark.parametrize("method", ["post", "put", "delete"])
@pytest.mark.parametrize("url", DASHBOARD_PAGES)
def test_the_dashboard_answers_only_get(admin_client, url, method):
    assert getattr(admin_client, method)(url).status_code == 405
    assert admin_client.head(url).status_code == 200


@pytest.mark.parametrize("view", ["progress", "progress_json"])
def test_broadcast_progress_pages_answer_only_get(admin_client, view):
    bot = Bot.objects.create(token=make_token(7300001), webhook_secret=Bot.new_secret())
    broadcast = Broadcast.objects.create(bot=bot, text="Hi")
    url = reverse(f"admin:broadcasts_broadcast_{view}", args=[broadcast.pk])
    assert admin_client.get(url).status_code == 200
    assert admin_client.post(url).status_code == 405


def test_the_operators_group_holds_what_running_campaigns_needs():
    operators = Group.objects.get(name="Operators")
    granted = {f"{p.content_type.app_label}.{p.codename}" for p in operators.permissions.all()}
    assert {
        "queueing.view_queue_dashboard",
        "queueing.view_jobrecord",
        "queueing.change_jobrecord",
        "broadcasts.add_broadcast",
        "broadcasts.change_broadcast",
        "broadcasts.view_broadcast",
        "broadcasts.add_pledge",
        "broadcasts.change_pledge",
        "broadcasts.view_pledge",
        "broadcasts.delete_pledge",
        "broadcasts.view_messagetemplate",
        "bots.view_telegramuser",
    } <= granted
    # Nothing that reaches the bots' tokens, people's accounts, or deletes history.
    assert not {p for p in granted if p.startswith(("auth.", "bots.add_", "bots.change_", "bots.delete_"))}
    assert "bots.view_bot" not in granted
    assert "queueing.delete_jobrecord" not in granted and "broadcasts.delete_broadcast" not in granted


def test_an_operator_runs_campaigns_but_cannot_touch_bots_or_users(client):
    operator = User.objects.create_user("operator", password="a long password", is_staff=True)
    operator.groups.add(Group.objects.get(name="Operators"))
    client.force_login(operator)
    allowed = [
        *DASHBOARD_PAGES,
        reverse("admin:queueing_jobrecord_changelist"),
        reverse("admin:queueing_jobrecord_retry_failed"),
        reverse("admin:broadcasts_broadcast_add"),
        reverse("admin:broadcasts_pledge_changelist"),
        reverse("admin:broadcasts_messagetemplate_add"),
        reverse("admin:bots_telegramuser_changelist"),
    ]
    for url in allowed:
        assert client.get(url).status_code == 200, url
    refused = [
        reverse("admin:bots_bot_changelist"),
        reverse("admin:bots_update_changelist"),
        reverse("admin:auth_user_changelist"),
        reverse("admin:auth_group_changelist"),
    ]
    for url in refused:
        assert client.get(url).status_code == 403, url
