"""Set-up the broadcasts tests share: members, a broadcast already sending, the admin's
messages."""

from django.contrib.messages import get_messages
from django.urls import reverse
from django.utils import timezone

from bots.models import Bot, TelegramUser
from broadcasts.models import STOP_BUTTON_TEXT, Audience, Broadcast, Delivery
from broadcasts.sending import fan_out


def make_members(bot: Bot, count: int, first_id: int = 1_000_000, **fields) -> list[TelegramUser]:
    return TelegramUser.objects.bulk_create(
        TelegramUser(bot=bot, telegram_id=first_id + n, first_name=f"M{n}", **{"is_subscribed": True, **fields})
        for n in range(count)
    )


def sending(bot: Bot, members: int = 3, **fields) -> Broadcast:
    """A broadcast already fanned out and sending, as start_broadcast leaves it."""
    make_members(bot, members)
    broadcast = Broadcast.objects.create(
        bot=bot, text="Hi", status=Broadcast.Status.SENDING, started_at=timezone.now(), **fields
    )
    fan_out(broadcast)
    return broadcast


def deliveries(broadcast: Broadcast) -> list[Delivery]:
    return list(broadcast.deliveries.order_by("pk"))


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def url(view: str, *args) -> str:
    """A broadcast admin page: url("preview", pk)."""
    return reverse(f"admin:broadcasts_broadcast_{view}", args=args)


# The broadcast form's A/B settings and its empty inline of message versions, as the admin posts them.
NO_VERSIONS = {
    "ab_sample_percent": "0",
    "ab_wait": "04:00:00",
    "ab_measure": "clicks",
    "ab_send_winner": "on",
    "versions-TOTAL_FORMS": "0",
    "versions-INITIAL_FORMS": "0",
}


def compose(bot: Bot, **fields) -> dict:
    """The broadcast form's data, as the admin posts it."""
    data = {
        "bot": bot.pk,
        "title": "Spring appeal",
        "text": "Hello #first_name",
        "template": "",
        "parse_mode": "",
        "buttons": "",
        "stop_button_text": STOP_BUTTON_TEXT,
        "audience": Audience.SUBSCRIBERS,
        "audience_value": "",
        "no_pledge_fallback": "-",
        "scheduled_at_0": "",
        "scheduled_at_1": "",
        "window_start": "",
        "window_end": "",
        "window_timezone": "",
    }
    return {**data, **NO_VERSIONS, **fields}


def assert_draft_refused(client, bot: Bot, fields: dict, field: str, error: str) -> None:
    """The broadcast form posted with `fields` shows `error` on `field` and saves nothing."""
    response = client.post(url("add"), compose(bot, **fields))

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert any(error in message for message in errors[field]), errors
    assert not Broadcast.objects.exists()
