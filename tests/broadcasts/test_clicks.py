"""Click tracking: each delivery's URL buttons go through the platform's redirect (with
PUBLIC_URL), a token is issued per delivery and button, a click is counted and sent on with
302 to that button of the delivery's own version, and anything the platform did not issue is
a 404."""

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test.utils import CaptureQueriesContext

from bots.models import Bot, TelegramUser
from broadcasts import clicks
from broadcasts.models import Broadcast, Click, Delivery, MessageVersion
from broadcasts.tasks import send_deliveries, send_test, start_broadcast

pytestmark = pytest.mark.django_db

BUTTONS = [{"text": "Pay", "url": "https://pay.example.org/x"}, {"text": "", "url": "https://ignored"}]


@pytest.fixture
def delivery() -> Delivery:
    bot = Bot.objects.create(token="123456:AAE-secret")
    ann = TelegramUser.objects.create(bot=bot, telegram_id=42, first_name="Ann")
    broadcast = Broadcast.objects.create(
        bot=bot,
        text="Hi",
        buttons=[BUTTONS[1], BUTTONS[0], {"text": "Site", "url": "https://site.example.org/"}],
    )
    return Delivery.objects.create(broadcast=broadcast, member=ann, chat_id=42, status=Delivery.Status.SENT)


def follow(client, token: str):
    return client.get(f"/l/{token}/")


def test_a_click_is_counted_once_per_press_and_redirected(client, delivery):
    first = follow(client, clicks.token(delivery.pk, 0))
    assert first.status_code == 302 and first["Location"] == "https://pay.example.org/x"
    follow(client, clicks.token(delivery.pk, 0))
    assert follow(client, clicks.token(delivery.pk, 1))["Location"] == "https://site.example.org/"

    rows = {row.button: row for row in Click.objects.filter(delivery=delivery)}
    assert {button: row.count for button, row in rows.items()} == {0: 2, 1: 1}
    assert rows[0].first_at < rows[0].last_at


def test_a_head_request_redirects_without_counting(client, delivery):
    response = client.head(f"/l/{clicks.token(delivery.pk, 0)}/")
    assert response.status_code == 302
    assert not Click.objects.exists()


@pytest.mark.parametrize(
    "tamper",
    [
        lambda token: token[:-1] + ("A" if token[-1] != "A" else "B"),  # the signature altered
        lambda token: "ff" + token,  # another delivery with this signature
        lambda token: "not-a-token",
        lambda token: "",
    ],
)
def test_a_token_the_platform_did_not_issue_is_a_404(client, delivery, tamper):
    token = tamper(clicks.token(delivery.pk, 0))
    assert clicks.target_of(token) is None
    assert client.get(f"/l/{token or 'x'}/").status_code == 404
    assert not Click.objects.exists()


def test_a_button_the_broadcast_does_not_have_or_a_deleted_delivery_is_a_404(client, delivery):
    assert follow(client, clicks.token(delivery.pk, 2)).status_code == 404
    token = clicks.token(delivery.pk, 0)
    delivery.delete()
    assert follow(client, token).status_code == 404


def test_tokens_carry_no_personal_data_and_live_under_public_url(delivery, settings):
    settings.PUBLIC_URL = "https://bot.example.org/"
    url = clicks.tracked_url(delivery.pk, 0)
    token = url.removeprefix("https://bot.example.org/l/").removesuffix("/")
    assert url.startswith("https://bot.example.org/l/") and len(token) < 24
    # What it carries: the delivery's number and the button's, then the signature.
    assert token.split(".")[:2] == [f"{delivery.pk:x}", "0"]
    assert clicks.target_of(token) == (delivery.pk, 0)


# -- Sending through the redirect ---------------------------------------------------------------


def test_without_public_url_the_preview_and_confirmation_say_clicks_are_not_tracked(staff, delivery, settings):
    settings.PUBLIC_URL = ""
    broadcast = delivery.broadcast
    Broadcast.objects.filter(pk=broadcast.pk).update(status=Broadcast.Status.DRAFT)
    TelegramUser.objects.update(is_subscribed=True)  # someone to send to: the confirmation shows
    for page in ("preview", "confirm"):
        html = staff.get(f"/admin/broadcasts/broadcast/{broadcast.pk}/{page}/").content.decode()
        assert "clicks are not tracked (PUBLIC_URL is not set)" in html, page
    settings.PUBLIC_URL = "https://bot.example.org"
    html = staff.get(f"/admin/broadcasts/broadcast/{broadcast.pk}/preview/").content.decode()
    assert "not tracked" not in html and "https://bot.example.org/l/" in html


@pytest.fixture
def staff(client):
    client.force_login(User.objects.create_superuser("operator", "ops@example.com", "a long password"))
    return client


def test_each_delivery_gets_its_own_tracked_urls_and_stop_button(telegram_bot, fake_telegram, settings):
    settings.PUBLIC_URL = "https://bot.example.org"
    ann, bob = (
        TelegramUser.objects.create(bot=telegram_bot, telegram_id=n, first_name=name, is_subscribed=True)
        for n, name in [(501, "Ann"), (502, "Bob")]
    )
    broadcast = Broadcast.objects.create(bot=telegram_bot, text="Hi", buttons=BUTTONS)
    start_broadcast(broadcast.pk)
    send_deliveries(broadcast.pk)

    for member in (ann, bob):
        delivery = broadcast.deliveries.get(member=member)
        rows = fake_telegram.calls("sendMessage", chat_id=member.telegram_id)[0].params["reply_markup"]
        assert rows["inline_keyboard"] == [
            [{"text": "Pay", "url": clicks.tracked_url(delivery.pk, 0)}],
            [{"text": "Stop these messages", "callback_data": f"stop:{delivery.pk}"}],
        ]


def test_without_public_url_buttons_go_direct_and_an_empty_stop_text_means_no_stop_button(
    telegram_bot, fake_telegram, settings
):
    settings.PUBLIC_URL = ""
    TelegramUser.objects.create(bot=telegram_bot, telegram_id=501, first_name="Ann", is_subscribed=True)
    broadcast = Broadcast.objects.create(bot=telegram_bot, text="Hi", buttons=BUTTONS, stop_button_text="")
    start_broadcast(broadcast.pk)
    send_deliveries(broadcast.pk)
    markup = fake_telegram.calls("sendMessage", chat_id=501)[0].params["reply_markup"]
    assert markup == {"inline_keyboard": [[{"text": "Pay", "url": "https://pay.example.org/x"}]]}


def test_the_redirect_follows_the_buttons_of_the_deliverys_own_version(client, delivery):
    broadcast = delivery.broadcast
    MessageVersion.objects.create(broadcast=broadcast, arm="B", text="B", buttons=[BUTTONS[0]])
    MessageVersion.objects.create(
        broadcast=broadcast,
        arm="B",
        language="fr",
        text="B fr",
        buttons=[{"text": "Payer", "url": "https://fr.example/"}],
    )
    Delivery.objects.filter(pk=delivery.pk).update(arm="B", language="fr")
    assert follow(client, clicks.token(delivery.pk, 0))["Location"] == "https://fr.example/"
    assert follow(client, clicks.token(delivery.pk, 1)).status_code == 404, "B fr has one button"
    Delivery.objects.filter(pk=delivery.pk).update(language="de")
    assert follow(client, clicks.token(delivery.pk, 0))["Location"] == "https://pay.example.org/x"


def test_a_test_send_links_directly_and_its_stop_button_only_says_what_it_does(telegram_bot, fake_telegram, settings):
    settings.PUBLIC_URL = "https://bot.example.org"
    ann = TelegramUser.objects.create(bot=telegram_bot, telegram_id=501, first_name="Ann", is_subscribed=True)
    broadcast = Broadcast.objects.create(bot=telegram_bot, text="Hi", buttons=BUTTONS)
    send_test(broadcast.pk, ann.pk, ann.pk)
    markup = fake_telegram.calls("sendMessage", chat_id=501)[0].params["reply_markup"]
    assert markup["inline_keyboard"] == [
        [{"text": "Pay", "url": "https://pay.example.org/x"}],
        [{"text": "Stop these messages", "callback_data": "stop:test"}],
    ]
    assert not Delivery.objects.exists()


def test_a_click_costs_one_indexed_read_and_one_write_three_reads_for_another_version(client, delivery):
    def queries_of_a_click() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert follow(client, clicks.token(delivery.pk, 0)).status_code == 302
        return len(queries)

    assert queries_of_a_click() == 2
    MessageVersion.objects.create(broadcast=delivery.broadcast, arm="B", text="B")
    Delivery.objects.filter(pk=delivery.pk).update(arm="B")
    assert queries_of_a_click() == 4
