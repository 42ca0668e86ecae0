"""Who is logging in, for django-axes' lock per IP address."""

from django.conf import settings
from django.http import HttpRequest


def client_ip(request: HttpRequest) -> str:
    """REMOTE_ADDR; behind LOGIN_PROXY_COUNT proxies, the address the farthest of them took the
    request from. Each proxy appends the address it received from to X-Forwarded-For, so that
    one is the LOGIN_PROXY_COUNT-th from the end: whatever a client put before it is ignored."""
    remote = request.META.get("REMOTE_ADDR", "")
    count = settings.LOGIN_PROXY_COUNT
    if not count:
        return remote
    forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
    return forwarded[-count] if len(forwarded) >= count else remote
