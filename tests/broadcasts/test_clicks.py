"""Click tracking's redirect: a token is issued per delivery and button, a click is counted
and sent on with 302, and anything the platform did not issue is a 404."""

import pytest

from bots.models import Bot, TelegramUser
from broadcasts import clicks
from broadcasts.models import Broadcast, Click, Delivery

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
