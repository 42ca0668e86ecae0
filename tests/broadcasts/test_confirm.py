"""Confirming before sending: the admin's confirmation page (GET shows who gets it and how it
reads, and sends nothing; its POST sends or schedules), the send summary it shares with
`send_broadcast`, and the broadcast form's defaults. One run in headless Chromium."""

from datetime import timedelta

import pytest
from django.utils import timezone

from bots.models import Bot, TelegramUser
from broadcasts.models import Audience, Broadcast, Pledge
from broadcasts.summary import duration_in_words, send_summary
from queueing.models import JobRecord
from tests.broadcasts.support import url
from tests.fake_telegram.objects import make_token
from tests.waiting import wait_for

pytestmark = pytest.mark.django_db

START = "broadcasts.tasks.start_broadcast"


def audience(bot: Bot) -> list[TelegramUser]:
    """Five recipients (three en, one de, one without a language), and four members the
    audience leaves out: two blocked, one opted out, one who never pressed Start."""
    made = TelegramUser.objects.bulk_create(
        TelegramUser(bot=bot, telegram_id=100 + n, first_name=name, language_code=language, **state)
        for n, (name, language, state) in enumerate(
            [
                ("Ann", "en", {"is_subscribed": True}),
                ("Bob", "en", {"is_subscribed": True}),
                ("Cy", "de", {"is_subscribed": True}),
                ("Di", "", {"is_subscribed": True}),
                ("Ed", "en", {"is_subscribed": True}),
                ("Fay", "en", {"is_subscribed": True, "is_blocked": True}),
                ("Gus", "de", {"is_subscribed": False, "is_blocked": True}),
                ("Hal", "en", {"is_subscribed": False, "opted_out_at": timezone.now()}),
                ("Ivy", "en", {"is_subscribed": False}),
            ]
        )
    )
    Pledge.objects.create(bot=bot, member=made[0], telegram_id=100, amount=500, paid_amount=125)
    Pledge.objects.create(bot=bot, member=made[2], telegram_id=102, amount=80)
    return made


def test_the_summary_counts_recipients_by_language_and_those_left_out(bot, settings):
    settings.TELEGRAM_RATE_LIMIT, settings.TELEGRAM_RATE_MARGIN = 2.5, 0.0
    audience(bot)
    broadcast = Broadcast.objects.create(
        bot=bot, text="Hi #first_name, #balance to go", buttons=[{"text": "Pay", "url": "https://example.org/pay"}]
    )

    summary = send_summary(broadcast)

    assert summary.recipients == 5
    assert summary.by_language == [("en", 3), ("", 1), ("de", 1)]
    assert (summary.blocked, summary.opted_out, summary.never_subscribed) == (2, 1, 1)
    assert summary.needs_pledge and summary.without_pledge == 3
    assert summary.rate == 2.5 and summary.duration == "about 2 s"
    assert summary.first_member.first_name == "Ann" and summary.first_text == "Hi Ann, 375 USD to go"
    text = "\n".join(summary.lines())
    assert "Audience: All subscribers: 5 recipients" in text and "by language: en 3, unknown 1, de 1" in text
    assert "Left out: 2 blocked the bot, 1 opted out, 1 never subscribed" in text
    assert "Without pledge data: 3" in text and "Button: Pay → https://example.org/pay" in text


def test_a_paid_broadcast_is_estimated_at_the_paid_rate(bot, settings):
    settings.TELEGRAM_RATE_LIMIT, settings.TELEGRAM_PAID_RATE_LIMIT, settings.TELEGRAM_RATE_MARGIN = 30, 1000, 0.0
    audience(bot)

    assert send_summary(Broadcast(bot=bot, text="x")).rate == 30
    assert send_summary(Broadcast(bot=bot, text="x", allow_paid_broadcast=True)).rate == 1000


@pytest.mark.parametrize(
    "seconds, words",
    [
        (0.2, "under a second"),
        (12, "about 12 s"),
        (60, "about 1 min"),
        (750, "about 12 min 30 s"),
        (8000, "about 2 h 13 min"),
    ],
)
def test_durations_read_as_words(seconds, words):
    assert duration_in_words(seconds) == words


def test_the_confirmation_page_shows_the_summary_and_sends_nothing(staff, bot):
    audience(bot)
    broadcast = Broadcast.objects.create(bot=bot, text="Hi #first_name", audience=Audience.SUBSCRIBERS)
    preview = staff.get(url("preview", broadcast.pk)).content.decode()
    assert f'href="{url("confirm", broadcast.pk)}"' in preview and "Send now to 5…" in preview

    response = staff.get(url("confirm", broadcast.pk))

    page = response.content.decode()
    assert response.status_code == 200 and response.context["summary"].recipients == 5
    assert 'id="confirm-recipients">5<' in page and 'data-language="en">3<' in page
    assert 'id="confirm-blocked">2<' in page and 'id="confirm-opted-out">1<' in page
    assert 'id="confirm-first-text">Hi Ann<' in page
    assert 'name="csrfmiddlewaretoken"' in page and 'name="_send"' in page
    assert not JobRecord.objects.exists()
    assert Broadcast.objects.get(pk=broadcast.pk).status == Broadcast.Status.DRAFT


def test_the_confirmation_post_starts_sending(staff, bot):
    audience(bot)
    broadcast = Broadcast.objects.create(bot=bot, text="Hi")

    response = staff.post(url("confirm", broadcast.pk), {"_send": "Yes"})

    assert response["Location"] == url("progress", broadcast.pk)
    assert JobRecord.objects.get(kind=START).args == [broadcast.pk]


def test_the_preview_no_longer_sends(staff, bot):
    audience(bot)
    broadcast = Broadcast.objects.create(bot=bot, text="Hi")

    response = staff.post(url("preview", broadcast.pk), {"_send": "1"})

    assert response.status_code == 405 and not JobRecord.objects.exists()


def test_scheduling_is_confirmed_too(staff, bot):
    audience(bot)
    broadcast = Broadcast.objects.create(bot=bot, text="Hi", scheduled_at=timezone.now() + timedelta(hours=1))

    page = staff.get(url("confirm", broadcast.pk) + "?schedule").content.decode()
    assert 'name="_schedule"' in page and 'name="_send"' not in page
    assert Broadcast.objects.get(pk=broadcast.pk).status == Broadcast.Status.DRAFT

    staff.post(url("confirm", broadcast.pk), {"_schedule": "Yes"})

    assert Broadcast.objects.get(pk=broadcast.pk).status == Broadcast.Status.SCHEDULED
    assert not JobRecord.objects.filter(kind=START).exists()


def test_a_broadcast_that_cannot_be_sent_has_no_confirmation(staff, bot):
    broadcast = Broadcast.objects.create(bot=bot, text="Hi", audience=Audience.FULLY_PAID)

    response = staff.get(url("confirm", broadcast.pk), follow=True)

    assert response.redirect_chain[-1][0] == url("preview", broadcast.pk)
    assert "Nobody is in this audience" in response.content.decode()


def test_the_form_preselects_the_only_bot_and_puts_save_and_preview_first(staff, bot):
    Bot.objects.create(token=make_token(7300002), webhook_secret=Bot.new_secret(), is_active=False)

    response = staff.get(url("add"))

    page = response.content.decode()
    assert response.context["adminform"].form["bot"].value() == bot.pk
    assert page.index('name="_preview"') < page.index('name="_save"')
    assert 'class="default" name="_preview"' in page
    assert "<h2>State</h2>" not in page and 'id="id_audience"' in page


def test_with_two_active_bots_none_is_preselected(staff, bot):
    Bot.objects.create(token=make_token(7300003), webhook_secret=Bot.new_secret())

    assert staff.get(url("add")).context["adminform"].form["bot"].value() is None


@pytest.mark.django_db(transaction=True)
def test_confirm_then_send_in_a_browser(request, live_server):
    """Skipped when selenium or Chromium is missing (see tests/browser.py)."""
    driver = request.getfixturevalue("staff_browser")
    shots = request.getfixturevalue("screenshots")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    bot = Bot.objects.create(token=make_token(7300004), webhook_secret=Bot.new_secret())
    audience(bot)

    driver.get(live_server.url + url("add"))
    value_row = driver.find_element(By.CSS_SELECTOR, ".form-row.field-audience_value")
    members_row = driver.find_element(By.CSS_SELECTOR, ".form-row.field-members")
    assert not value_row.is_displayed() and not members_row.is_displayed()
    Select(driver.find_element(By.ID, "id_audience")).select_by_value(Audience.LANGUAGE)
    assert value_row.is_displayed() and not members_row.is_displayed()
    driver.find_element(By.ID, "id_audience_value").send_keys("en")
    driver.find_element(By.ID, "id_text").send_keys("Hello #first_name")
    driver.save_screenshot(str(shots / "broadcast_compose.png"))
    driver.find_element(By.ID, "save-and-preview").click()  # the bot was preselected

    send = wait_for(lambda: driver.find_elements(By.ID, "preview-send"), what="the preview")[0]
    assert send.text == "Send now to 3…"
    send.click()

    wait_for(lambda: driver.find_elements(By.ID, "broadcast-confirm"), what="the confirmation page")
    assert driver.find_element(By.ID, "confirm-recipients").text == "3"
    assert driver.find_element(By.ID, "confirm-first-text").text == "Hello Ann"
    driver.save_screenshot(str(shots / "broadcast_confirm.png"))
    broadcast = Broadcast.objects.get()
    assert broadcast.status == Broadcast.Status.DRAFT and not JobRecord.objects.filter(kind=START).exists()
    driver.find_element(By.ID, "confirm-go").click()

    wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, ".messagelist"), what="the progress page")
    assert driver.current_url.endswith(url("progress", broadcast.pk))
    assert JobRecord.objects.get(kind=START).args == [broadcast.pk]


def test_the_estimate_is_at_the_bots_own_rate(bot, settings):
    settings.TELEGRAM_RATE_LIMIT, settings.TELEGRAM_PAID_RATE_LIMIT, settings.TELEGRAM_RATE_MARGIN = 30, 1000, 0.0
    bot.rate_limit, bot.paid_rate_limit = 20, 500
    bot.save()
    audience(bot)

    assert send_summary(Broadcast(bot=bot, text="x")).rate == 20
    assert send_summary(Broadcast(bot=bot, text="x", allow_paid_broadcast=True)).rate == 500
