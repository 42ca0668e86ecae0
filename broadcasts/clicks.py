"""Click tracking: with PUBLIC_URL set, a broadcast's URL buttons point at the platform's own
short redirect, PUBLIC_URL/l/<token>/, one token per delivery and button.

A token is the delivery's id and the button's position among its version's URL buttons, signed
with SECRET_KEY: it cannot be guessed or altered, carries no personal data, and needs no row
until someone clicks. A click costs one indexed read (the button's address) and one write
(`Click.record`); the address is that of the delivery's own version, so a delivery of another
A/B arm or language reads the broadcast and its versions too."""

import base64
from typing import NamedTuple

from django.conf import settings
from django.urls import reverse
from django.utils.crypto import constant_time_compare, salted_hmac

from broadcasts.models import Broadcast, url_buttons
from broadcasts.variants import Versions

SIGNATURE_BYTES = 9  # 72 bits: 12 characters in the URL


class Target(NamedTuple):
    delivery_id: int
    button: int


def signature(target: Target) -> str:
    digest = salted_hmac("broadcasts.clicks", f"{target.delivery_id}.{target.button}", algorithm="sha256").digest()
    return base64.urlsafe_b64encode(digest[:SIGNATURE_BYTES]).decode()


def token(delivery_id: int, button: int) -> str:
    target = Target(delivery_id, button)
    return f"{delivery_id:x}.{button}.{signature(target)}"


def target_of(token: str) -> Target | None:
    """The delivery and button a token was issued for; None for a token this platform did not issue."""
    delivery, _, rest = token.partition(".")
    button, _, signed = rest.partition(".")
    try:
        target = Target(int(delivery, 16), int(button))
    except ValueError:
        return None
    return target if constant_time_compare(signed, signature(target)) else None


def is_tracking() -> bool:
    return bool(settings.PUBLIC_URL)


class Tracking(NamedTuple):
    has_url_buttons: bool
    tracked: bool
    base: str  # where the redirect lives


def tracking(broadcast: Broadcast) -> Tracking:
    """For the preview and the confirmation: whether the broadcast's URL buttons (in any of
    its versions) will count clicks."""
    has_url_buttons = any(url_buttons(version.buttons) for version in Versions(broadcast))
    return Tracking(has_url_buttons, is_tracking(), redirect_base() if is_tracking() else "")


def redirect_base() -> str:
    """PUBLIC_URL/l/: a tracked URL is this, a token and a slash."""
    return settings.PUBLIC_URL.rstrip("/") + reverse("broadcasts:click", args=["-"]).removesuffix("-/")


def tracked_url(delivery_id: int, button: int, base: str = "") -> str:
    """The redirect for this delivery's button; `base` is redirect_base(), when the caller
    builds many."""
    return (base or redirect_base()) + token(delivery_id, button) + "/"
