"""Alerts to people: a crossed threshold reaches each operators' chat once, however often and
by however many processes it is evaluated, reminders come once per period, and "resolved"
once when it clears; with a real telegram qcluster and the fake Telegram end to end."""

from datetime import timedelta

import pytest
import telegram
from django.urls import reverse
from django.utils import timezone

from bots import alert_sender
from queueing import alerts
from queueing.errors import PermanentError
from queueing.health import DEGRADED, DOWN, Check
from queueing.housekeeping import Housekeeper
from queueing.models import Alert, ClusterHeartbeat, JobRecord
from queueing.registry import Registry
from tests.clusters import telegram_cluster_alive
from tests.waiting import wait_for

CHATS = [5001, -1005002]
SEND_ALERT = "queueing.alerts.send_alert"


@pytest.fixture
def alert_settings(settings):
    settings.ALERT_CHAT_IDS = CHATS
    settings.ALERT_RAISE_AFTER = 30
    settings.ALERT_REPEAT_MINUTES = 60
    settings.ALERT_RESOLVE_AFTER = 60
    settings.PUBLIC_URL = "https://ops.example.org"
    # No bot of the settings: alerts go from the first active bot, the test's own. (One set
    # here would also be created again by the database flush after a transactional test.)
    settings.TELEGRAM_BOT_TOKEN = ""
    return settings


def sent() -> list[tuple[int, str]]:
    """(chat, text) of every alert message enqueued, in order."""
    return [
        tuple(args[:2])
        for args in JobRecord.objects.filter(kind=SEND_ALERT).order_by("pk").values_list("args", flat=True)
    ]


def banner(admin_client, name: str) -> dict:
    return next(
        alert for alert in admin_client.get("/admin/queues/data.json").json()["alerts"] if alert["name"] == name
    )


DEPTH = Check("depth:broadcasts", DEGRADED, "1500 queued, over 1000")


@pytest.mark.django_db
def test_an_alert_waits_its_raise_delay_then_is_told_once_to_every_chat(alert_settings):
    telegram_cluster_alive()
    t0 = timezone.now()

    for seconds in (0, 10, 29):
        assert alerts.evaluate({DEPTH.name: DEPTH}, now=t0 + timedelta(seconds=seconds)) == 0
    for seconds in (30, 31, 40, 600):
        alerts.evaluate({DEPTH.name: DEPTH}, now=t0 + timedelta(seconds=seconds))

    assert [chat for chat, _ in sent()] == CHATS
    text = sent()[0][1]
    assert text.startswith("🔴 DEGRADED: depth:broadcasts\n1500 queued, over 1000")
    assert text.endswith("https://ops.example.org/admin/queues/")
    alert = Alert.objects.get()
    # Enqueued, not sent: only a message Telegram accepted counts (see the dashboard's test below).
    assert (alert.raised_at, alert.last_notified_at, alert.notifications) == (t0, t0 + timedelta(seconds=30), 0)


@pytest.mark.django_db
def test_a_reminder_every_period_while_it_lasts(alert_settings):
    telegram_cluster_alive()
    alert_settings.ALERT_RAISE_AFTER = 0
    t0 = timezone.now()
    crossed = {DEPTH.name: DEPTH}

    for minutes in (0, 1, 59, 60, 61, 119, 120):
        alerts.evaluate(crossed, now=t0 + timedelta(minutes=minutes))

    texts = [text for chat, text in sent() if chat == CHATS[0]]
    assert len(texts) == 3
    assert texts[1].startswith("🔴 Still degraded: depth:broadcasts, for 1 h (since ")
    assert texts[2].startswith("🔴 Still degraded: depth:broadcasts, for 2 h (since ")


@pytest.mark.django_db
def test_resolved_once_after_it_stays_clear_and_a_flap_is_no_new_alert(alert_settings):
    telegram_cluster_alive()
    alert_settings.ALERT_RAISE_AFTER = 0
    t0 = timezone.now()
    alerts.evaluate({DEPTH.name: DEPTH}, now=t0)
    assert len(sent()) == 2

    alerts.evaluate({}, now=t0 + timedelta(minutes=5))  # clear...
    alerts.evaluate({DEPTH.name: DEPTH}, now=t0 + timedelta(minutes=5, seconds=30))  # ...and back: the same alert
    for seconds in (0, 30, 59):
        alerts.evaluate({}, now=t0 + timedelta(minutes=6, seconds=seconds))
    assert len(sent()) == 2 and Alert.objects.get().resolved_at is None

    for minutes in (7, 8, 30):
        alerts.evaluate({}, now=t0 + timedelta(minutes=minutes))

    assert [text for _, text in sent()[2:]] == [
        "✅ Resolved: depth:broadcasts, after 7 min\nhttps://ops.example.org/admin/queues/"
    ] * 2
    alert = Alert.objects.get()
    assert alert.resolved_at == t0 + timedelta(minutes=7)

    alerts.evaluate({DEPTH.name: DEPTH}, now=t0 + timedelta(minutes=31))  # crossed again: a new episode
    assert Alert.objects.count() == 2 and Alert.objects.active().get().raised_at == t0 + timedelta(minutes=31)
    alerts.evaluate({DEPTH.name: DEPTH}, now=t0 + timedelta(days=91))
    assert Alert.objects.get().raised_at == t0 + timedelta(minutes=31)  # the resolved one is history no more


@pytest.mark.django_db
def test_a_problem_gone_before_anyone_was_told_goes_quietly(alert_settings):
    telegram_cluster_alive()
    t0 = timezone.now()
    alerts.evaluate({DEPTH.name: DEPTH}, now=t0)
    alerts.evaluate({}, now=t0 + timedelta(seconds=10))
    alerts.evaluate({}, now=t0 + timedelta(minutes=10))

    assert sent() == []
    assert not Alert.objects.exists()  # a flapping check leaves no trail of rows


@pytest.mark.django_db
def test_processes_with_stale_views_of_an_alert_send_nothing_twice(alert_settings):
    """Two evaluators that read the alert before either acted: only the first one's update
    changes the row, so only it enqueues."""
    telegram_cluster_alive()
    alert_settings.ALERT_RAISE_AFTER = 0
    alert_settings.ALERT_RESOLVE_AFTER = 0
    t0 = timezone.now()
    assert alerts._open(DEPTH, t0) is not None
    assert alerts._open(DEPTH, t0) is None  # one active alert per key, by the database's constraint

    first, second = Alert.objects.get(), Alert.objects.get()
    assert alerts._crossed(first, DEPTH, t0) == 2
    assert alerts._crossed(second, DEPTH, t0) == 0

    first, second = Alert.objects.get(), Alert.objects.get()
    assert alerts._clear(first, t0 + timedelta(seconds=1)) == 2
    assert alerts._clear(second, t0 + timedelta(seconds=1)) == 0
    assert len(sent()) == 4


@pytest.mark.django_db
def test_the_alerts_are_the_dashboards_banners(alert_settings, admin_client):
    alert_settings.ALERT_QUEUE_DEPTH = 1
    alert_settings.ALERT_DISK_FREE_MB = 0
    now = timezone.now()
    for pid, queue in enumerate(["telegram", "broadcasts"], start=1):
        ClusterHeartbeat.objects.create(queue=queue, host="h", pid=pid, workers=1, started_at=now, last_seen=now)
    for _ in range(2):
        JobRecord.objects.create(queue="broadcasts", kind="tests.jobs.echo")

    banners = {alert["name"] for alert in admin_client.get("/admin/queues/data.json").json()["alerts"]}
    assert banners == {"cluster:downloads", "depth:broadcasts"}
    assert set(alerts.current_problems()) == banners


@pytest.mark.django_db
def test_the_default_cluster_evaluates_the_alerts():
    duties = [duty for _, duty in Housekeeper("default").duties]
    assert alerts.evaluate_duty in duties


@pytest.mark.django_db
def test_no_chats_no_messages_but_the_state_is_kept_and_the_banner_says_nobody_was_told(alert_settings, admin_client):
    alert_settings.ALERT_CHAT_IDS = []
    alert_settings.ALERT_RAISE_AFTER = 0
    alert_settings.ALERT_DISK_FREE_MB = 0
    telegram_cluster_alive()
    assert alerts.evaluate() == 0
    alert = Alert.objects.active().get(key="cluster:downloads")
    assert sent() == [] and alert.last_notified_at is not None and alert.notifications == 0
    assert banner(admin_client, "cluster:downloads")["note"].endswith(", nobody told (ALERT_CHAT_IDS is empty)")
    assert "operators told" not in admin_client.get("/admin/queues/").content.decode()


def test_without_a_telegram_cluster_the_alert_is_sent_from_the_evaluating_process(
    alert_settings, telegram_bot, fake_telegram
):
    """The alert may be that the telegram queue's cluster is down: nothing would send it."""
    alert_settings.ALERT_RAISE_AFTER = 0
    down = Check("cluster:telegram", DOWN, "no cluster has beaten in 15 s")

    # Two at once: the second message into each chat waits for the chat's pace (a group's
    # is one message in 3 s) instead of being lost.
    assert alerts.evaluate({down.name: down, DEPTH.name: DEPTH}) == 4

    for chat in CHATS:
        texts = sorted(call.params["text"] for call in fake_telegram.calls("sendMessage", chat_id=chat))
        assert len(texts) == 2
        assert texts[0].startswith("🔴 DEGRADED: depth:broadcasts\n1500 queued")
        assert texts[1].startswith("🔴 DOWN: cluster:telegram\nno cluster has beaten in 15 s")
    assert sent() == []
    assert set(Alert.objects.values_list("key", "notifications")) == {(down.name, 2), (DEPTH.name, 2)}


@pytest.mark.e2e
def test_a_stopped_cluster_alerts_each_chat_once_and_resolves_once_end_to_end(
    clusters, telegram_bot, fake_telegram, alert_settings
):
    """Real default and telegram qclusters: the default cluster evaluates twice a second,
    this process evaluates too, the telegram cluster sends through the fake Telegram."""
    env = {
        "ALERT_CHAT_IDS": ",".join(map(str, CHATS)),
        "ALERT_RAISE_AFTER": "0",
        "ALERT_RESOLVE_AFTER": "0",
        "ALERT_EVALUATE_SECONDS": "0.5",
        "ALERT_DISK_FREE_MB": "0",
        "TELEGRAM_BOT_TOKEN": "",
        "PUBLIC_URL": "",
        "QUEUE_TELEGRAM_WORKERS": "1",
        "QUEUE_BROADCASTS_WORKERS": "1",
    }
    settings = alert_settings
    settings.ALERT_RAISE_AFTER = settings.ALERT_RESOLVE_AFTER = 0
    settings.ALERT_DISK_FREE_MB = 0
    settings.PUBLIC_URL = ""
    now = timezone.now()
    ClusterHeartbeat.objects.create(  # downloads stays alive throughout
        queue="downloads", host="elsewhere", pid=1, workers=1, started_at=now, last_seen=now + timedelta(hours=1)
    )
    clusters.start("telegram", **env)
    clusters.start("default", **env)

    def texts(chat: int) -> list[str]:
        return [c.params["text"] for c in fake_telegram.calls("sendMessage", chat_id=chat) if c.status == 200]

    wait_for(lambda: all(texts(chat) for chat in CHATS), timeout=30, what="the alert in every chat")
    for _ in range(10):
        alerts.evaluate()
    wait_for(lambda: Alert.objects.filter(key="cluster:broadcasts", notifications=2).exists(), what="the alert row")
    deadline = timezone.now() + timedelta(seconds=3)  # the default cluster evaluates about 6 more times
    while timezone.now() < deadline:
        alerts.evaluate()
    for chat in CHATS:
        [text] = texts(chat)
        assert text.startswith("🔴 DOWN: cluster:broadcasts")

    clusters.start("broadcasts", **env)

    wait_for(lambda: all(len(texts(chat)) == 2 for chat in CHATS), timeout=30, what="'resolved' in every chat")
    deadline = timezone.now() + timedelta(seconds=3)
    while timezone.now() < deadline:
        alerts.evaluate()
    for chat in CHATS:
        assert len(texts(chat)) == 2
        assert texts(chat)[1].startswith("✅ Resolved: cluster:broadcasts, after ")
    assert not Alert.objects.active().exists()
    assert JobRecord.objects.filter(kind=SEND_ALERT, status="succeeded").count() == 4


def test_the_dashboard_banner_says_operators_were_told_only_once_a_message_went_out(
    alert_settings, admin_client, telegram_bot, fake_telegram
):
    alert_settings.ALERT_RAISE_AFTER = 0
    alert_settings.ALERT_DISK_FREE_MB = 0
    telegram_cluster_alive()
    alerts.evaluate()
    raised = Alert.objects.get(key="cluster:downloads")
    since = f"since {timezone.localtime(raised.raised_at):%H:%M}"
    assert banner(admin_client, raised.key)["since"] == raised.raised_at.isoformat()
    assert banner(admin_client, raised.key)["note"] == f"{since}, nobody told yet (the message has not gone out)"

    fake_telegram.fail("kicked", method="sendMessage", times=1)
    [first, second] = [args for chat, text in sent() for args in [(chat, text, raised.pk)] if raised.key in text]
    with pytest.raises(telegram.error.Forbidden):
        alerts.send_alert(*first)  # as the telegram queue's worker runs it: refused
    assert banner(admin_client, raised.key)["note"] == f"{since}, nobody told yet (the message has not gone out)"

    alerts.send_alert(*second)

    assert banner(admin_client, raised.key)["note"] == f"{since}, operators told"
    assert "operators told)" in admin_client.get("/admin/queues/").content.decode()


def test_operators_see_the_alert_history_in_the_admin(admin_client):
    now = timezone.now()
    Alert.objects.create(key="cluster:telegram", level="down", detail="no live cluster", raised_at=now)
    Alert.objects.create(key="queue:downloads", level="degraded", raised_at=now, resolved_at=now)

    page = admin_client.get(reverse("admin:queueing_alert_changelist") + "?resolved_at__isempty=1")

    assert page.status_code == 200
    assert "cluster:telegram" in page.content.decode()
    assert "queue:downloads" not in page.content.decode()


@pytest.mark.django_db
def test_the_alert_job_sends_through_the_registered_sender(monkeypatch):
    senders = Registry("alert sender")
    monkeypatch.setattr(alerts, "senders", senders)
    with pytest.raises(PermanentError, match="No alert sender"):
        alerts.send_alert(5001, "hello")

    told = []
    senders.register("chat", lambda chat_id, text: told.append((chat_id, text)) or {"chat_id": chat_id})
    assert alerts.send_alert(5001, "hello") == {"chat_id": 5001}
    assert told == [(5001, "hello")]


def test_the_bots_app_registers_its_bot_as_the_alert_sender():
    assert alerts.senders.values() == [alert_sender.send_alert]
