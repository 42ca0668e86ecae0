"""The one place secrets are taken out of text before it is stored, logged, shown or sent.

`redact(text)` replaces every secret the platform knows (bot tokens and their secret halves,
webhook secrets, SECRET_KEY, METRICS_TOKEN, the passwords in DATABASE_URL and REDIS_URL, the
key in SENTRY_DSN) and anything shaped like a bot token. Apps add their own secrets with
`register_secrets(provider)` from their AppConfig.ready(): bots registers its tokens, so
queueing never imports it. The list is cached for CACHE_SECONDS; `forget()` drops it sooner."""

import logging
import re
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from urllib.parse import unquote, urlsplit

from django.apps import apps
from django.conf import settings
from django.core.signals import setting_changed

from queueing.registry import Registry

logger = logging.getLogger(__name__)

MASK = "[redacted]"
# Telegram's tokens: the bot's id, a colon, then 35 characters of secret.
TOKEN_SHAPE = re.compile(r"\d+:[A-Za-z0-9_-]{35}")
CACHE_SECONDS = 10.0
# A shorter "secret" would mangle ordinary words wherever it appears.
MIN_SECRET_LENGTH = 6

SecretSource = Callable[[], Iterable[str]]
secret_sources: Registry[SecretSource] = Registry("secret source")
_provided: dict[Callable, set[str]] = {}
_cache: dict = {"pattern": None, "expires": 0.0}
_refreshing = threading.local()


def register_secrets(provider: SecretSource) -> None:
    """`provider()` returns secrets to redact; it is called at most once per CACHE_SECONDS."""
    secret_sources.register(f"{provider.__module__}.{provider.__qualname__}", provider)
    forget()


def forget(**kwargs) -> None:
    """Read the secrets again on the next redaction (a bot's token or a setting changed)."""
    _cache.update(pattern=None, expires=0.0)


setting_changed.connect(forget)


def redact(text: str, refresh: bool = True) -> str:
    """`refresh=False` uses the secrets as last read and never asks the providers (the
    database): a logging filter may run anywhere, even in a finalizer that the garbage
    collector runs while this thread is inside a database call, which a query would deadlock."""
    if not text:
        return text
    pattern = _pattern() if refresh else _cache["pattern"] or _compile(_known_secrets([]))
    if pattern is not None:
        text = pattern.sub(MASK, text)
    return TOKEN_SHAPE.sub(MASK, text)


def describe(exc: BaseException) -> str:
    """The error as "TypeName: message", redacted: what a job, an update or a delivery records."""
    return redact(f"{type(exc).__name__}: {exc}")


def format_traceback(exc: BaseException) -> str:
    return redact("".join(traceback.format_exception(exc)))


def redact_all(value):
    """Every string inside dicts (keys too), lists and tuples redacted (a Sentry event)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        # Sentry sends local variables, whose keys may be tokens.
        return {redact_all(key): redact_all(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact_all(item) for item in value]
    return value


class RedactingFilter(logging.Filter):
    """On every logging handler (settings.LOGGING): the message, the traceback and the stack
    of every record leave redacted, whichever logger made it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # arguments that do not fit the format: keep the format alone
            message = str(record.msg)
        record.msg, record.args = redact(message, refresh=False), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, refresh=False)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, refresh=False)
        return True


def _pattern() -> re.Pattern | None:
    now = time.monotonic()
    if now >= _cache["expires"] and not getattr(_refreshing, "active", False):
        # The providers may query the database, whose logging comes back here: meanwhile
        # the last list serves.
        _refreshing.active = True
        try:
            # Before the apps are ready their providers may not query: ask again once they are.
            ready = apps.ready
            secrets = _known_secrets(secret_sources.values() if ready else [])
            _cache.update(pattern=_compile(secrets), expires=now + CACHE_SECONDS if ready else 0.0)
        finally:
            _refreshing.active = False
    return _cache["pattern"]


def _compile(secrets: set[str]) -> re.Pattern | None:
    if not secrets:
        return None
    # Longest first, so a token is replaced whole rather than its secret half alone.
    return re.compile("|".join(re.escape(s) for s in sorted(secrets, key=len, reverse=True)))


def _known_secrets(providers: list[SecretSource]) -> set[str]:
    found = set(_settings_secrets())
    for provider in providers:
        try:
            _provided[provider] = set(provider())
        except Exception:  # no database, or inside an event loop: what it said last time serves
            logger.debug("A secrets provider failed", exc_info=True)
        found |= _provided.get(provider, set())
    found |= {token.partition(":")[2] for token in found if TOKEN_SHAPE.fullmatch(token)}
    return {secret for secret in found if secret and len(secret) >= MIN_SECRET_LENGTH}


def _settings_secrets() -> Iterable[str]:
    yield settings.SECRET_KEY
    yield from getattr(settings, "SECRET_KEY_FALLBACKS", [])
    for name in ("METRICS_TOKEN", "TELEGRAM_BOT_TOKEN", "TELEGRAM_WEBHOOK_SECRET"):
        yield getattr(settings, name, "")
    for database in settings.DATABASES.values():
        yield database.get("PASSWORD") or ""
    for name in ("DATABASE_URL", "REDIS_URL"):
        yield from _url_password(getattr(settings, name, ""))
    yield from _url_user(getattr(settings, "SENTRY_DSN", ""))


def _url_password(url: str) -> Iterable[str]:
    password = urlsplit(url).password if url else None
    if password:
        yield password
        yield unquote(password)


def _url_user(url: str) -> Iterable[str]:
    """A Sentry DSN's key is the user part of its URL."""
    user = urlsplit(url).username if url else None
    if user:
        yield user
