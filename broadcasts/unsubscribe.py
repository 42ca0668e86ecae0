"""The "Stop these messages" button under a broadcast's message: an inline button whose
callback_data names the delivery (`stop:<delivery id>`). Pressing it opts the member out at
once, as /stop does, and records the unsubscribe on that delivery, for that broadcast's
results, only when the delivery is the pressing member's own: callback data can be forged.

A member who blocks the bot after a delivery was sent counts as unsubscribed from it too
(broadcasts.results)."""

from django.utils import timezone
from django.utils.translation import gettext

from bots.handlers import Context
from broadcasts.models import Delivery

PREFIX = "stop"
# What a test's Stop button carries: there is no delivery, and the operator stays subscribed.
TEST = "test"


def callback_data(delivery_id: int | None) -> str:
    """The Stop button's data for this delivery; None for a test send."""
    return f"{PREFIX}:{TEST if delivery_id is None else delivery_id}"


def press_stop(context: Context, argument: str) -> str:
    """The member pressed Stop: opt out, count it on the delivery; the callback's answer."""
    if argument == TEST:
        return gettext("This is a test message: on a broadcast, this button opts the member out.")
    member = context.member
    member.opt_out()
    if argument.isdigit():
        Delivery.objects.filter(pk=int(argument), member=member, unsubscribed_at__isnull=True).update(
            unsubscribed_at=timezone.now()
        )
    return gettext("You won't receive broadcasts any more. Send /start whenever you want them back.")
