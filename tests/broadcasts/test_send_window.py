"""Send windows: the arithmetic (midnight, daylight saving time) on given instants; a sender
on a simulated wall clock that stops at the window's end and finishes the next morning; the
admin form and send_broadcast's --window."""

import re
import time as real_time
from datetime import UTC, datetime, time, timedelta
from io import StringIO
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.urls import reverse

from bots.models import Bot, TelegramUser
from broadcasts.models import Broadcast, Delivery
from broadcasts.sending import BroadcastSender, fan_out
from broadcasts.tasks import send_deliveries
from broadcasts.window import BadZone, SendWindow, zone
from queueing.errors import Deferred
from tests.broadcasts.support import compose
from tests.fake_telegram.objects import make_token

ADDIS = ZoneInfo("Africa/Addis_Ababa")  # UTC+3 all year
PARIS = ZoneInfo("Europe/Paris")  # clocks forward 2026-03-29 02:00, back 2026-10-25 03:00


def at(zone_: ZoneInfo, *args: int) -> datetime:
    return datetime(*args, tzinfo=zone_)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# -- the arithmetic ---------------------------------------------------------------------------


def test_a_day_window_includes_its_start_and_excludes_its_end():
    window = SendWindow(time(9), time(20), ADDIS)

    assert not window.contains(at(ADDIS, 2026, 12, 3, 8, 59, 59))
    assert window.contains(at(ADDIS, 2026, 12, 3, 9, 0))
    assert window.contains(utc(2026, 12, 3, 16, 59, 59))  # 19:59:59 in Addis Ababa
    assert not window.contains(utc(2026, 12, 3, 17, 0))


def test_a_day_window_opens_later_today_or_tomorrow():
    window = SendWindow(time(9), time(20), ADDIS)

    assert window.next_opening(at(ADDIS, 2026, 12, 3, 7, 15)) == at(ADDIS, 2026, 12, 3, 9, 0)
    assert window.next_opening(at(ADDIS, 2026, 12, 3, 20, 0)) == at(ADDIS, 2026, 12, 4, 9, 0)
    assert window.seconds_until_open(at(ADDIS, 2026, 12, 3, 19, 59, 59)) == 0
    assert window.seconds_until_open(at(ADDIS, 2026, 12, 3, 20, 0)) == 13 * 3600
    assert window.next_opening(at(ADDIS, 2026, 12, 31, 23, 0)) == at(ADDIS, 2027, 1, 1, 9, 0)


def test_a_window_that_crosses_midnight_is_open_at_night():
    window = SendWindow(time(22), time(6), ADDIS)

    assert window.crosses_midnight
    night = [(21, 59), (22, 0), (23, 59), (0, 0), (5, 59)]
    assert [window.contains(at(ADDIS, 2026, 12, 3, h, m)) for h, m in night] == [False, True, True, True, True]
    assert not window.contains(at(ADDIS, 2026, 12, 4, 6, 0))
    assert window.next_opening(at(ADDIS, 2026, 12, 4, 6, 0)) == at(ADDIS, 2026, 12, 4, 22, 0)
    assert window.next_opening(at(ADDIS, 2026, 12, 4, 3, 0)) == at(ADDIS, 2026, 12, 4, 3, 0)


def test_the_window_follows_the_wall_clock_across_daylight_saving_time():
    window = SendWindow(time(9), time(20), PARIS)

    # 20:30 CET on the Saturday: Sunday 09:00 is CEST, 11.5 hours later rather than 12.5.
    assert window.next_opening(utc(2026, 3, 28, 19, 30)) == utc(2026, 3, 29, 7, 0)
    assert window.seconds_until_open(utc(2026, 3, 28, 19, 30)) == 11.5 * 3600
    assert window.contains(utc(2026, 3, 29, 17, 59)) and not window.contains(utc(2026, 3, 29, 18, 0))
    # Back to CET in October: the window opens an hour later in UTC.
    assert window.next_opening(utc(2026, 10, 24, 20, 0)) == utc(2026, 10, 25, 8, 0)


def test_a_night_window_is_an_hour_shorter_on_the_night_the_clocks_go_forward():
    window = SendWindow(time(22), time(6), PARIS)

    assert window.contains(utc(2026, 3, 28, 21, 0))  # 22:00 CET
    assert window.contains(utc(2026, 3, 29, 3, 59))  # 05:59 CEST
    assert not window.contains(utc(2026, 3, 29, 4, 0))  # 06:00 CEST: 7 hours after opening


def test_an_opening_time_the_clocks_skip_opens_as_they_change_and_a_repeated_one_at_its_first():
    window = SendWindow(time(2, 30), time(5), PARIS)

    # 02:00 CET becomes 03:00 CEST at 01:00 UTC: 02:30 never happens that night.
    assert window.next_opening(utc(2026, 3, 29, 0, 0)) == utc(2026, 3, 29, 1, 0)
    assert not window.contains(utc(2026, 3, 29, 0, 59, 59))
    # 03:00 CEST becomes 02:00 CET at 01:00 UTC: 02:30 happens twice, first at 00:30 UTC.
    assert window.next_opening(utc(2026, 10, 25, 0, 0)) == utc(2026, 10, 25, 0, 30)


def test_the_reason_says_the_window_and_when_sending_resumes():
    window = SendWindow(time(9), time(20), ADDIS)

    assert window.describe() == "09:00–20:00 Africa/Addis_Ababa"
    assert window.closed_reason(at(ADDIS, 2026, 12, 3, 20, 0, 1)) == (
        "outside its send window (09:00–20:00 Africa/Addis_Ababa); resumes at 2026-12-04 09:00 Africa/Addis_Ababa"
    )


def test_a_window_needs_two_times_and_a_real_zone():
    with pytest.raises(ValueError, match="different start and end"):
        SendWindow(time(9), time(9), ADDIS)
    with pytest.raises(BadZone, match="not a time zone name"):
        zone("Mars/Olympus_Mons")


# -- a sender on a simulated wall clock -------------------------------------------------------


class WallClock:
    """timezone.now() for broadcasts.sending: real time running from a chosen instant."""

    def __init__(self, start: datetime):
        self.set(start)

    def set(self, start: datetime) -> None:
        self.start, self.real_start = start, real_time.time()

    def now(self) -> datetime:
        return self.start + timedelta(seconds=real_time.time() - self.real_start)

    def real(self, moment: datetime) -> float:
        """When the simulated `moment` happens, in real time (time.time(), as the fake records)."""
        return self.real_start + (moment - self.start).total_seconds()


@pytest.mark.filterwarnings("ignore:Please use 'Bot.send")
def test_a_broadcast_started_at_1959_stops_at_2000_and_finishes_the_next_morning(
    telegram_bot, fake_telegram, settings, monkeypatch, client
):
    settings.TELEGRAM_RATE_LIMIT = 100  # 25 sends claimed at once, some with slots after the close
    members = TelegramUser.objects.bulk_create(
        TelegramUser(bot=telegram_bot, telegram_id=8_000_000 + n, first_name=f"M{n}", is_subscribed=True)
        for n in range(300)
    )
    broadcast = Broadcast.objects.create(
        bot=telegram_bot,
        text="Hi",
        status=Broadcast.Status.SENDING,
        window_start=time(9),
        window_end=time(20),
        window_timezone="Africa/Addis_Ababa",
    )
    fan_out(broadcast)
    clock = WallClock(at(ADDIS, 2026, 12, 3, 19, 59, 58))
    monkeypatch.setattr("broadcasts.sending.timezone", SimpleNamespace(now=clock.now))
    handed_over = []  # the simulated time at which each request was handed to the client
    send = BroadcastSender._send

    async def recorded(self, *args):
        handed_over.append(clock.now())
        return await send(self, *args)

    monkeypatch.setattr(BroadcastSender, "_send", recorded)

    with pytest.raises(Deferred) as deferred:
        send_deliveries(broadcast.pk)

    evening = fake_telegram.calls("sendMessage")
    assert 0 < len(evening) == len(handed_over) < 300
    # Nothing leaves once it is 20:00: sends are claimed a quarter of a second ahead, and
    # those whose slot comes after the close stay pending. (When a request reaches the fake
    # depends on the machine's load, so what is checked is when the sender let it go: right
    # after its window check, with no await in between.)
    assert max(handed_over) < at(ADDIS, 2026, 12, 3, 20, 0) + timedelta(milliseconds=5)
    assert 12.99 * 3600 < deferred.value.retry_after <= 13 * 3600
    counts = broadcast.counts()
    assert (counts["sent"], counts["pending"], counts["sending"]) == (len(evening), 300 - len(evening), 0)
    reason = "outside its send window (09:00–20:00 Africa/Addis_Ababa); resumes at 2026-12-04 09:00 Africa/Addis_Ababa"
    assert Broadcast.objects.get(pk=broadcast.pk).progress()["stall_reason"] == reason
    client.force_login(User.objects.create_superuser("operator", "ops@example.com", "a long password"))
    page = client.get(reverse("admin:broadcasts_broadcast_progress", args=[broadcast.pk])).content.decode()
    assert reason in page

    clock.set(at(ADDIS, 2026, 12, 4, 9, 0))
    send_deliveries(broadcast.pk)

    chats = [call.params["chat_id"] for call in fake_telegram.calls("sendMessage") if call.status == 200]
    assert sorted(chats) == sorted(m.telegram_id for m in members)
    broadcast.refresh_from_db()
    assert broadcast.status == Broadcast.Status.DONE and broadcast.stall_reason == ""


# -- the admin form and the command line ------------------------------------------------------


@pytest.fixture
def bot(db, settings) -> Bot:
    settings.TELEGRAM_BOT_TOKEN = ""
    bot = Bot.objects.create(token=make_token(7500001), webhook_secret=Bot.new_secret())
    TelegramUser.objects.create(bot=bot, telegram_id=7, first_name="Ann", is_subscribed=True)
    return bot


def test_the_admin_saves_a_window_and_the_preview_shows_it(bot, client):
    client.force_login(User.objects.create_superuser("operator", "ops@example.com", "a long password"))

    client.post(
        reverse("admin:broadcasts_broadcast_add"),
        compose(bot, window_start="09:00", window_end="20:00", window_timezone="Africa/Addis_Ababa"),
    )

    broadcast = Broadcast.objects.get()
    assert broadcast.send_window == SendWindow(time(9), time(20), ADDIS)
    page = client.get(reverse("admin:broadcasts_broadcast_preview", args=[broadcast.pk])).content.decode()
    assert "09:00–20:00 Africa/Addis_Ababa" in page


@pytest.mark.parametrize(
    ("window", "field", "error"),
    [
        ({"window_start": "09:00"}, "window_end", "A send window needs a start and an end."),
        ({"window_start": "09:00", "window_end": "09:00"}, "window_end", "different start and end"),
        (
            {"window_start": "09:00", "window_end": "20:00", "window_timezone": "Addis"},
            "window_timezone",
            "not a time zone name",
        ),
        ({"window_timezone": "Africa/Addis_Ababa"}, "window_start", "Give the window's start and end"),
    ],
)
def test_the_admin_refuses_an_incomplete_or_wrong_window(bot, client, window, field, error):
    client.force_login(User.objects.create_superuser("operator", "ops@example.com", "a long password"))

    response = client.post(reverse("admin:broadcasts_broadcast_add"), compose(bot, **window))

    assert any(error in message for message in response.context["adminform"].form.errors[field])
    assert not Broadcast.objects.exists()


def send(*args: str) -> Broadcast:
    out = StringIO()
    call_command("send_broadcast", "--yes", "--text", "Hi", *args, stdout=out, stderr=StringIO())
    return Broadcast.objects.get(pk=int(out.getvalue().strip()))


def test_send_broadcast_takes_a_window_and_its_zone(bot):
    broadcast = send("--window", "22:00-06:00", "--timezone", "Africa/Addis_Ababa")

    assert broadcast.send_window == SendWindow(time(22), time(6), ADDIS)


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--window", "9-20"], "write START-END in 24-hour time"),
        (["--window", "25:00-06:00"], "write START-END in 24-hour time"),
        (["--window", "09:00-20:00", "--timezone", "Addis"], "--timezone: “Addis” is not a time zone name"),
        (["--window", "09:00-09:00"], "--window: A send window needs different start and end times."),
        (["--timezone", "Africa/Addis_Ababa"], "--timezone is the time zone of --window"),
    ],
)
def test_send_broadcast_refuses_a_wrong_window_and_creates_nothing(bot, args, error):
    with pytest.raises(CommandError, match=re.escape(error)):
        send(*args)

    assert not Broadcast.objects.exists()
    assert not Delivery.objects.exists()


def test_the_confirmation_says_when_sending_begins_if_the_window_is_closed(bot, client):
    client.force_login(User.objects.create_superuser("operator", "ops@example.com", "a long password"))
    opens = (datetime.now(UTC) + timedelta(hours=1)).replace(second=0, microsecond=0)
    closed = Broadcast.objects.create(
        bot=bot, text="Hi", window_start=opens.time(), window_end=(opens + timedelta(hours=1)).time()
    )
    now = datetime.now(UTC)
    open_now = Broadcast.objects.create(
        bot=bot, text="Hi", window_start=(now - timedelta(hours=1)).time(), window_end=(now + timedelta(hours=1)).time()
    )

    page = client.get(reverse("admin:broadcasts_broadcast_confirm", args=[closed.pk])).content.decode()
    other = client.get(reverse("admin:broadcasts_broadcast_confirm", args=[open_now.pk])).content.decode()

    assert f"the window is closed now, so sending begins at {opens:%Y-%m-%d %H:%M} UTC" in page
    assert "if the window closes before it is done, the rest waits for the next opening" in other


def test_send_broadcast_and_broadcast_status_show_the_window(bot):
    out = StringIO()
    call_command(
        "send_broadcast", "--dry-run", "--text", "Hi", "--window", "09:00-20:00", "--timezone", "Africa/Addis_Ababa",
        stdout=out, stderr=StringIO(),
    )  # fmt: skip
    broadcast = send("--window", "09:00-20:00", "--timezone", "Africa/Addis_Ababa")
    status = StringIO()
    call_command("broadcast_status", str(broadcast.pk), stdout=status)

    assert "Send window: 09:00–20:00 Africa/Addis_Ababa" in out.getvalue()
    assert "Send window: 09:00–20:00 Africa/Addis_Ababa" in status.getvalue()
