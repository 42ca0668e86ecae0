"""The dashboard's "Active broadcasts" panel: broadcasts sending or paused with their
progress, in the HTML and the JSON, through queueing's panel registry."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from bots.models import Bot, TelegramUser
from broadcasts.models import Broadcast, Delivery
from queueing import dashboard
from queueing.registry import Registry
from tests.fake_telegram.objects import make_token

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def static_files_without_a_manifest(settings):
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


@pytest.fixture
def broadcasts(settings):
    settings.TELEGRAM_BOT_TOKEN = ""
    bot = Bot.objects.create(token=make_token(7400001), webhook_secret=Bot.new_secret())
    members = [TelegramUser.objects.create(bot=bot, telegram_id=200 + i) for i in range(4)]
    started = timezone.now() - timedelta(minutes=2)

    def make(title: str, status: str, statuses: list[str]) -> Broadcast:
        broadcast = Broadcast.objects.create(bot=bot, title=title, text="Hi", status=status, started_at=started)
        for member, delivery in zip(members, statuses, strict=True):
            Delivery.objects.create(broadcast=broadcast, member=member, chat_id=member.telegram_id, status=delivery)
        return broadcast

    sending = make("Spring appeal", "sending", ["sent", "sent", "failed", "pending"])
    paused = make("Reminder", "paused", ["sent", "pending", "pending", "pending"])
    make("Finished one", "done", ["sent", "sent", "sent", "sent"])
    Broadcast.objects.create(bot=bot, title="A draft", text="Hi")
    return sending, paused


def test_the_json_lists_sending_and_paused_broadcasts_with_progress(admin_client, broadcasts):
    sending, paused = broadcasts
    body = admin_client.get(reverse("queueing:dashboard_json")).json()
    active = body["panels"]["active_broadcasts"]
    assert [b["id"] for b in active] == [sending.pk, paused.pk]
    first, second = active
    assert first["title"] == "Spring appeal" and first["status"] == "sending"
    assert first["percent"] == 75.0 and first["counts"]["sent"] == 2 and first["counts"]["total"] == 4
    assert first["url"] == reverse("admin:broadcasts_broadcast_progress", args=[sending.pk])
    assert second["status"] == "paused" and second["percent"] == 25.0 and second["rate"] == 0.0


def test_the_page_shows_a_progress_bar_linking_to_the_progress_page(admin_client, broadcasts):
    sending, paused = broadcasts
    for params in ({}, {"partial": "1"}):
        html = admin_client.get(reverse("queueing:dashboard"), params).content.decode()
        assert "Active broadcasts" in html
        assert f'href="{reverse("admin:broadcasts_broadcast_progress", args=[sending.pk])}"' in html
        assert f'href="{reverse("admin:broadcasts_broadcast_progress", args=[paused.pk])}"' in html
        assert '<progress max="100" value="75.0">' in html and '<progress max="100" value="25.0">' in html
        assert "Finished one" not in html and "A draft" not in html


def test_no_active_broadcast(admin_client):
    assert admin_client.get(reverse("queueing:dashboard_json")).json()["panels"]["active_broadcasts"] == []
    assert "No broadcast is sending or paused." in admin_client.get(reverse("queueing:dashboard")).content.decode()


def test_a_failing_panel_does_not_break_the_dashboard(admin_client, monkeypatch):
    panels = Registry("dashboard panel")
    for name, panel in dashboard.panels.items():
        panels.register(name, panel)

    def broken():
        raise RuntimeError("boom")

    template = "admin/broadcasts/active_broadcasts_panel.html"
    panels.register("broken", dashboard.Panel("broken", "Broken", template, broken))
    monkeypatch.setattr(dashboard, "panels", panels)
    assert admin_client.get(reverse("queueing:dashboard_json")).json()["panels"]["broken"] is None
    html = admin_client.get(reverse("queueing:dashboard")).content.decode()
    assert 'id="panel-broken"' in html and "Not available" in html


def test_queueing_does_not_import_broadcasts():
    import subprocess
    import sys

    code = (
        "import sys, django; from django.conf import settings; "
        "settings.configure(INSTALLED_APPS=['django.contrib.contenttypes', 'django.contrib.auth', "
        "'django.contrib.admin', 'django.contrib.sessions', 'django.contrib.messages', 'django_q', 'queueing'], "
        "DATABASES={'default': {'ENGINE': 'django.db.backends.sqlite3', 'NAME': ':memory:'}}, "
        "QUEUES={'telegram': {'workers': 1, 'timeout': 30, 'retries': 0, 'backoff': 1}}); django.setup(); "
        "import queueing.dashboard, queueing.report, queueing.runner, queueing.stats; "
        "print(any(m == 'broadcasts' or m.startswith('broadcasts.') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr[-2000:]
