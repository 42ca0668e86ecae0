"""Linking a staff user's Telegram account from the admin (a one-time /start code), and
"Send a test to me": the broadcast as a chosen member gets it, marked as a test, in the
operator's own chat."""

from datetime import timedelta

import pytest
import segno
from django.contrib.auth.models import Permission, User
from django.urls import reverse
from django.utils import timezone

from bots import handlers
from bots.models import OperatorLink, TelegramUser, Update
from broadcasts.audiences import recipients
from broadcasts.models import Audience, Broadcast, Pledge
from broadcasts.sending import fan_out
from broadcasts.tasks import send_test
from queueing.models import JobRecord
from tests.fake_telegram.objects import make_user
from tests.fake_telegram.updates import text_message
from tests.waiting import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

SEND_TEST = "broadcasts.tasks.send_test"
OPERATOR_ID = 555_000_001


@pytest.fixture
def operator_user() -> User:
    return User.objects.create_superuser("operator", "ops@example.com", "a long password")


@pytest.fixture
def staff(client, operator_user):
    client.force_login(operator_user)
    return client


def link_url(bot) -> str:
    return reverse("admin:broadcasts_broadcast_link_telegram") + f"?bot={bot.pk}"


@pytest.fixture
def press_start(fake_telegram):
    """A member sends `text` (/start <code>): the update goes through the handlers as a worker
    would handle it; returns the bot's reply, as the fake Telegram received it."""

    def press(bot, text: str, user_id: int = OPERATOR_ID) -> str:
        payload = text_message(bot.token, text, user=make_user(user_id, first_name="Olga"))
        update = Update.objects.create(bot=bot, update_id=payload["update_id"], payload=payload, chat_id=user_id)
        handlers.handle(bot, update)
        return fake_telegram.calls("sendMessage", chat_id=user_id)[-1].params["text"]

    return press


def make_link(staff, bot) -> OperatorLink:
    staff.post(link_url(bot), {"bot": bot.pk})
    return OperatorLink.objects.latest("created_at")


def test_the_link_page_makes_a_one_time_deep_link_and_learns_the_bot_username(staff, telegram_bot):
    assert telegram_bot.username == ""

    link = make_link(staff, telegram_bot)
    page = staff.get(link_url(telegram_bot)).content.decode()

    telegram_bot.refresh_from_db()
    assert telegram_bot.username == f"bot{telegram_bot.telegram_id}_bot"  # from getMe
    assert link.code.startswith("op-") and link.member is None
    deep_link = f"https://t.me/{telegram_bot.username}?start={link.code}"
    assert f'href="{deep_link}"' in page and 'id="link-none"' in page


def test_the_link_page_shows_the_deep_link_as_a_qr_code(staff, telegram_bot):
    link = make_link(staff, telegram_bot)
    page = staff.get(link_url(telegram_bot)).content.decode()

    deep_link = link.deep_link()
    qr = segno.make(deep_link, error="m").svg_inline(scale=5, light="white", title=deep_link)
    assert f'<div id="link-qr-code">{qr}</div>' in page


def test_start_with_the_code_links_the_account_once(staff, operator_user, telegram_bot, press_start):
    link = make_link(staff, telegram_bot)

    reply = press_start(telegram_bot, f"/start {link.code}")

    link.refresh_from_db()
    member = TelegramUser.objects.get(bot=telegram_bot, telegram_id=OPERATOR_ID)
    assert link.member == member and link.linked_at is not None
    assert member.is_subscribed
    assert reply.startswith("Linked to operator")
    assert OperatorLink.objects.linked_member(operator_user, telegram_bot) == member
    assert "Olga" in staff.get(link_url(telegram_bot)).content.decode()

    # Someone else with the same link gets nothing.
    again = press_start(telegram_bot, f"/start {link.code}", user_id=OPERATOR_ID + 1)

    link.refresh_from_db()
    assert link.member == member
    assert "expired or was used already" in again


def test_an_expired_code_links_nothing(staff, operator_user, telegram_bot, press_start):
    link = make_link(staff, telegram_bot)
    OperatorLink.objects.filter(pk=link.pk).update(created_at=timezone.now() - timedelta(minutes=16))

    reply = press_start(telegram_bot, f"/start {link.code}")

    link.refresh_from_db()
    assert link.member is None and link.linked_at is None
    assert "expired or was used already" in reply
    assert OperatorLink.objects.linked_member(operator_user, telegram_bot) is None


def test_a_plain_start_is_still_a_greeting(telegram_bot, press_start):
    assert press_start(telegram_bot, "/start").startswith("Hi Olga!")
    assert press_start(telegram_bot, "/start op-not-a-code", user_id=OPERATOR_ID + 1).startswith("This link has")


def test_operators_see_and_remove_their_own_linked_accounts_in_the_admin(client, telegram_bot, press_start):
    """Unlinking ends the tests to that chat and takes it out of the Staff only audience."""
    olga, pete = (
        User.objects.create_user(name, password="a long password", is_staff=True) for name in ("olga", "pete")
    )
    may_send = Permission.objects.get(codename="change_broadcast")  # as the Operators group does
    for user in (olga, pete):
        user.user_permissions.add(may_send)
    client.force_login(pete)
    press_start(telegram_bot, f"/start {make_link(client, telegram_bot).code}", user_id=OPERATOR_ID + 1)
    client.force_login(olga)
    press_start(telegram_bot, f"/start {make_link(client, telegram_bot).code}")
    mine = OperatorLink.objects.get(user=olga)
    changelist = reverse("admin:bots_operatorlink_changelist")

    page = client.get(changelist).content.decode()

    assert f"Olga Smith ({OPERATOR_ID})" in page and "linked" in page
    assert str(OPERATOR_ID + 1) not in page  # Pete's
    assert client.get(
        reverse("admin:bots_operatorlink_change", args=[OperatorLink.objects.get(user=pete).pk])
    ).status_code in (302, 403)
    assert 'id="link-accounts"' in client.get(link_url(telegram_bot)).content.decode()
    make_link(client, telegram_bot)  # a second link, never used
    assert client.get(changelist + "?state=unused").context["cl"].result_count == 1
    assert client.get(changelist + "?state=linked").context["cl"].result_count == 1

    client.post(reverse("admin:bots_operatorlink_delete", args=[mine.pk]), {"post": "yes"})

    assert not OperatorLink.objects.filter(pk=mine.pk).exists() and OperatorLink.objects.filter(user=pete).exists()
    assert OperatorLink.objects.linked_member(olga, telegram_bot) is None
    broadcast = Broadcast.objects.create(bot=telegram_bot, text="Hi", audience=Audience.STAFF)
    assert [m.telegram_id for m in recipients(broadcast)] == [OPERATOR_ID + 1]


def test_linked_operators_make_up_the_staff_audience(staff, telegram_bot, settings, press_start):
    settings.OPERATOR_TELEGRAM_IDS = []
    TelegramUser.objects.create(bot=telegram_bot, telegram_id=42, first_name="Member", is_subscribed=True)
    press_start(telegram_bot, f"/start {make_link(staff, telegram_bot).code}")
    broadcast = Broadcast.objects.create(bot=telegram_bot, text="Hi", audience=Audience.STAFF)

    assert [m.telegram_id for m in recipients(broadcast)] == [OPERATOR_ID]
    assert fan_out(broadcast) == 1 and broadcast.deliveries.get().chat_id == OPERATOR_ID


@pytest.fixture
def operator(operator_user, telegram_bot) -> TelegramUser:
    """The staff user's Telegram account, linked (as the tests above do) a while ago: a reply
    just sent into the chat would hold the test back for a second (pacing)."""
    member = TelegramUser.objects.create(
        bot=telegram_bot, telegram_id=OPERATOR_ID, first_name="Olga", is_subscribed=True
    )
    OperatorLink.objects.create(
        user=operator_user, bot=telegram_bot, member=member, code=OperatorLink.new_code(), linked_at=timezone.now()
    )
    return member


def test_send_a_test_to_me_sends_the_sample_members_text_and_buttons_to_the_operator(
    staff, telegram_bot, operator, fake_telegram
):
    ann = TelegramUser.objects.create(bot=telegram_bot, telegram_id=42, first_name="Ann", is_subscribed=True)
    Pledge.objects.create(bot=telegram_bot, member=ann, telegram_id=42, amount=100, paid_amount=40)
    broadcast = Broadcast.objects.create(
        bot=telegram_bot,
        text="Dear <b>#first_name</b>, you owe #balance",
        parse_mode="HTML",
        buttons=[{"text": "Pay", "url": "https://example.org/pay"}],
    )
    preview = staff.get(reverse("admin:broadcasts_broadcast_preview", args=[broadcast.pk])).content.decode()
    assert f'data-test-as="{ann.pk}"' in preview

    response = staff.post(reverse("admin:broadcasts_broadcast_test_send", args=[broadcast.pk]), {"member": ann.pk})

    assert response["Location"] == reverse("admin:broadcasts_broadcast_preview", args=[broadcast.pk])
    job = JobRecord.objects.get(kind=SEND_TEST)
    assert job.queue == "telegram" and job.args == [broadcast.pk, ann.pk, operator.pk]
    send_test(*job.args)  # as the telegram queue's worker runs it

    sent = fake_telegram.calls("sendMessage", chat_id=OPERATOR_ID)[-1]
    assert sent.ok and sent.params["text"] == "[TEST]\nDear <b>Ann</b>, you owe 60 USD"
    assert sent.params["parse_mode"] == "HTML"
    assert sent.params["reply_markup"] == {
        "inline_keyboard": [
            [{"text": "Pay", "url": "https://example.org/pay"}],
            [{"text": "Stop these messages", "callback_data": "stop:test"}],
        ]
    }
    assert not fake_telegram.calls(chat_id=42)
    assert not broadcast.deliveries.exists() and Broadcast.objects.get(pk=broadcast.pk).status == "draft"


def test_a_test_with_a_photo_and_markdown_is_sent_as_a_photo_with_an_escaped_mark(
    telegram_bot, operator, fake_telegram, settings, tmp_path
):
    settings.MEDIA_ROOT = tmp_path
    (tmp_path / "broadcasts").mkdir()
    (tmp_path / "broadcasts" / "p.jpg").write_bytes(b"\xff\xd8\xff\xe0 not much of a photo")
    broadcast = Broadcast.objects.create(
        bot=telegram_bot, text="Hello *#first_name*", parse_mode="MarkdownV2", photo="broadcasts/p.jpg"
    )

    send_test(broadcast.pk, operator.pk, operator.pk)

    sent = fake_telegram.calls("sendPhoto", chat_id=OPERATOR_ID)[-1]
    assert sent.ok and sent.params["caption"] == "\\[TEST\\]\nHello *Olga*"
    assert [f.filename for f in sent.files] == ["p.jpg"]


def test_send_a_test_without_a_linked_account_asks_to_link_first(staff, telegram_bot):
    broadcast = Broadcast.objects.create(bot=telegram_bot, text="Hi")
    preview = staff.get(reverse("admin:broadcasts_broadcast_preview", args=[broadcast.pk])).content.decode()
    assert 'id="preview-link-first"' in preview

    response = staff.post(reverse("admin:broadcasts_broadcast_test_send", args=[broadcast.pk]), {"member": "1"})

    assert response["Location"] == link_url(telegram_bot)
    assert not JobRecord.objects.filter(kind=SEND_TEST).exists()


def test_link_then_send_a_test_in_a_browser(request, live_server, telegram_bot, press_start):
    """Skipped when selenium or Chromium is missing (see tests/browser.py)."""
    driver = request.getfixturevalue("staff_browser")
    shots = request.getfixturevalue("screenshots")
    from selenium.webdriver.common.by import By

    ann = TelegramUser.objects.create(bot=telegram_bot, telegram_id=42, first_name="Ann", is_subscribed=True)
    broadcast = Broadcast.objects.create(bot=telegram_bot, text="Hello #first_name")
    driver.get(live_server.url + reverse("admin:broadcasts_broadcast_changelist"))
    driver.find_element(By.ID, "link-telegram-tool").click()
    wait_for(lambda: driver.find_elements(By.ID, "link-none"), what="the link page")
    driver.find_element(By.ID, "link-new").click()

    deep_link = wait_for(lambda: driver.find_elements(By.ID, "link-deep-link"), what="the deep link")[0]
    code = OperatorLink.objects.get().code
    assert deep_link.get_attribute("href") == f"https://t.me/bot{telegram_bot.telegram_id}_bot?start={code}"
    qr_code = driver.find_element(By.CSS_SELECTOR, "#link-qr-code svg")
    assert qr_code.is_displayed() and qr_code.size["width"] >= 150
    driver.save_screenshot(str(shots / "operator_link.png"))
    press_start(telegram_bot, f"/start {code}")
    driver.refresh()
    assert "Olga" in driver.find_element(By.ID, "link-linked").text

    driver.get(live_server.url + reverse("admin:broadcasts_broadcast_preview", args=[broadcast.pk]))
    driver.find_element(By.CSS_SELECTOR, f'[data-test-as="{ann.pk}"]').click()

    wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, ".messagelist"), what="the preview again")
    assert "A test, as Ann gets it, is on its way" in driver.find_element(By.CSS_SELECTOR, ".messagelist").text
    driver.save_screenshot(str(shots / "broadcast_test_send.png"))
    operator = TelegramUser.objects.get(bot=telegram_bot, telegram_id=OPERATOR_ID)
    assert JobRecord.objects.get(kind=SEND_TEST).args == [broadcast.pk, ann.pk, operator.pk]

    driver.get(live_server.url + reverse("admin:bots_operatorlink_changelist"))
    row = driver.find_element(By.CSS_SELECTOR, "#result_list tbody tr")
    assert f"Olga Smith ({OPERATOR_ID})" in row.text and "linked" in row.text
    driver.save_screenshot(str(shots / "operator_linked_accounts.png"))
