import hmac
import time

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from bots.inbox import accept_update
from bots.models import Bot
from bots.updates import MalformedUpdate

MAX_BODY = 1024 * 1024
BOT_CACHE_SECONDS = 10

# telegram_id -> (pk, webhook secret, cached until): the hot path must not query for the bot.
_bots: dict[int, tuple[int, str, float]] = {}


def _bot(telegram_id: int) -> tuple[int, str] | None:
    cached = _bots.get(telegram_id)
    if cached and cached[2] > time.monotonic():
        return cached[0], cached[1]
    found = Bot.objects.filter(telegram_id=telegram_id, is_active=True).values_list("pk", "webhook_secret").first()
    if found:
        _bots[telegram_id] = (*found, time.monotonic() + BOT_CACHE_SECONDS)
    return found


def _error(status: int, reason: str) -> JsonResponse:
    return JsonResponse({"ok": False, "error": reason}, status=status)


@csrf_exempt
@require_POST
def webhook(request: HttpRequest, telegram_id: int) -> HttpResponse:
    """Check, store, answer: one INSERT. The telegram cluster enqueues the handling.

    Only an unavailable database is answered 5xx (503), so that Telegram delivers the update
    again; a body no retry could make acceptable is answered 4xx and dropped."""
    try:
        return _take(request, telegram_id)
    except (OperationalError, InterfaceError):
        return _error(503, "the database is unavailable; deliver the update again later")


def _take(request: HttpRequest, telegram_id: int) -> HttpResponse:
    bot = _bot(telegram_id)
    if bot is None:
        return _error(404, "unknown bot")
    bot_pk, secret = bot
    given = request.META.get("HTTP_X_TELEGRAM_BOT_API_SECRET_TOKEN", "")
    if not secret or not hmac.compare_digest(given.encode(), secret.encode()):
        return _error(403, "wrong or missing secret token")
    if request.content_type != "application/json":
        return _error(415, "an update is sent as application/json")
    if _declared_length(request) > MAX_BODY:
        return _error(413, "update larger than 1 MiB")
    body = request.read(MAX_BODY + 1)
    if len(body) > MAX_BODY:
        return _error(413, "update larger than 1 MiB")
    try:
        accept_update(bot_pk, body)
    except MalformedUpdate as exc:
        return _error(400, str(exc))
    except ValueError:
        return _error(400, "the body is not JSON")
    return HttpResponse(status=200)


def _declared_length(request: HttpRequest) -> int:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0
