"""No secret leaves: when Telegram rejects the token (python-telegram-bot's InvalidToken quotes it
whole), answers 5xx or 403, or cannot be reached, neither the token nor its secret half appears
in a log line, a job record, an update's error, an admin page, the dashboard's JSON, a Sentry
event or an alert message. The failures are real ones, from the fake Telegram."""

import io
import logging
import socket
from datetime import timedelta

import pytest
import sentry_sdk
from django.contrib.auth.models import User
from django.urls import reverse
from django.utils import timezone

from bots import tasks
from bots.models import Bot, Update
from queueing import alerts, redaction
from queueing.errors import ServiceUnavailable
from queueing.health import DOWN, Check
from queueing.models import Alert, Circuit, JobRecord
from queueing.runner import run_job
from tests.clusters import telegram_cluster_alive
from tests.fake_telegram import Fault, make_token, updates
from tests.waiting import wait_for

FAILURES = ["invalid_token", "server_error", "forbidden", "network"]
SECRET_HALF = "AAHsecretHalfOfTheBotToken_0123-xyz"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(params=FAILURES)
def failing_bot(request, telegram_bot, fake_telegram, settings):
    """The test's bot, with a token of its own, and Telegram failing it as the parameter says."""
    settings.TELEGRAM_BOT_TOKEN = ""
    telegram_bot.token = make_token(7000001, SECRET_HALF)
    if request.param == "invalid_token":  # a path the fake answers 404, as Telegram does a bad token
        telegram_bot.api_base_url = f"{fake_telegram.url}/nowhere/bot"
    elif request.param == "network":
        telegram_bot.api_base_url = f"http://127.0.0.1:{closed_port()}/bot"
    else:
        error = {"server_error": "bad_gateway", "forbidden": "blocked"}[request.param]
        fake_telegram.add_fault(Fault(error, method="sendMessage"))
    telegram_bot.save()
    telegram_bot.failure = request.param
    return telegram_bot


def assert_no_secret(text: str, bot: Bot) -> None:
    assert bot.token not in text
    assert SECRET_HALF not in text
    assert bot.webhook_secret not in text


def failed_alert_job(bot: Bot) -> JobRecord:
    """An alert message sent by the bot, failing as the fake Telegram makes it."""
    record = JobRecord.objects.create(queue="telegram", kind=alerts.send_alert.kind, args=[5001, "hello"])
    run_job(record.pk, str(record.dispatch_id))
    record.refresh_from_db()
    assert record.status in (JobRecord.Status.FAILED, JobRecord.Status.RETRYING)
    assert record.last_error and record.traceback
    return record


def failed_update(bot: Bot) -> Update:
    """A /start the bot cannot answer: on its last try, or (Telegram unreachable, its token
    rejected) after an outage past the horizon."""
    payload = updates.text_message(bot.token, "/start")
    update = Update.objects.create(
        bot=bot,
        update_id=payload["update_id"],
        payload=payload,
        chat_id=payload["message"]["chat"]["id"],
        status=Update.Status.ENQUEUED,
        attempts=tasks.handle_update.attempt_budget - 1,
    )
    try:
        tasks.handle_one(update)
    except ServiceUnavailable:
        Update.objects.filter(pk=update.pk).update(received_at=timezone.now() - timedelta(days=2))
        update.refresh_from_db()
        tasks.handle_one(update)
    update.refresh_from_db()
    assert update.status == Update.Status.FAILED
    return update


def telegram_error(bot: Bot) -> Exception:
    from bots import telegram_api

    try:
        telegram_api.call(bot, "send_message", chat_id=5001, text="hello")
    except Exception as exc:
        # While Telegram is unreachable the call says so; what it could not reach is the cause.
        return exc.__cause__ if isinstance(exc, ServiceUnavailable) else exc
    raise AssertionError("the fake Telegram answered")


@pytest.fixture
def console():
    """What the settings' console handler writes (the handler LOGGING configured, filters and all)."""
    [handler] = [
        h for h in logging.getLogger().handlers if any(isinstance(f, redaction.RedactingFilter) for f in h.filters)
    ]
    stream = io.StringIO()
    previous = handler.setStream(stream)
    yield stream
    handler.setStream(previous)


def test_an_invalid_token_error_quotes_the_token_unless_redacted(failing_bot):
    exc = telegram_error(failing_bot)
    if failing_bot.failure == "invalid_token":
        assert failing_bot.token in str(exc)  # what made redaction necessary
        assert redaction.describe(exc) == "InvalidToken: The token `[redacted]` was rejected by the server."
    assert_no_secret(redaction.describe(exc), failing_bot)
    assert_no_secret(redaction.format_traceback(exc), failing_bot)


def test_the_job_record_keeps_the_error_without_the_token(failing_bot):
    record = failed_alert_job(failing_bot)
    assert_no_secret(record.last_error, failing_bot)
    assert_no_secret(record.traceback, failing_bot)


def test_the_log_line_of_a_failed_job_has_no_token(failing_bot, console):
    record = failed_alert_job(failing_bot)
    logged = console.getvalue()
    assert f"Job {record.pk} {record.kind}:" in logged
    assert_no_secret(logged, failing_bot)


def test_any_logger_s_message_and_traceback_are_redacted(failing_bot, console):
    exc = telegram_error(failing_bot)
    logging.getLogger("somewhere.else").error("Telegram said %s (token %s)", exc, failing_bot.token, exc_info=exc)
    logged = console.getvalue()
    assert "Telegram said" in logged and "Traceback" in logged
    assert_no_secret(logged, failing_bot)


def test_the_update_error_has_no_token(failing_bot):
    update = failed_update(failing_bot)
    if failing_bot.failure == "invalid_token":
        assert update.error.endswith("(token rejected)")
    assert_no_secret(update.error, failing_bot)


def test_admin_pages_show_no_token(failing_bot, client):
    record, update = failed_alert_job(failing_bot), failed_update(failing_bot)
    client.force_login(User.objects.create_superuser("admin", "admin@example.org", "pw"))
    pages = [
        reverse("admin:queueing_jobrecord_change", args=[record.pk]),
        reverse("admin:queueing_jobrecord_changelist") + "?status=failed",
        reverse("admin:bots_update_change", args=[update.pk]),
        reverse("admin:bots_update_changelist"),
        reverse("queueing:dashboard"),
    ]
    for url in pages:
        response = client.get(url)
        assert response.status_code == 200, url
        assert_no_secret(response.content.decode(), failing_bot)


def test_the_dashboard_json_shows_no_token(failing_bot, client):
    record = failed_alert_job(failing_bot)
    client.force_login(User.objects.create_superuser("admin", "admin@example.org", "pw"))
    response = client.get(reverse("queueing:dashboard_json"))
    if record.status == JobRecord.Status.FAILED:
        assert [job["id"] for job in response.json()["recent_failures"]] == [record.pk]
    assert_no_secret(response.content.decode(), failing_bot)


def test_rows_stored_before_redaction_are_redacted_on_the_dashboard(failing_bot, client):
    exc = telegram_error(failing_bot)
    JobRecord.objects.create(
        queue="telegram",
        kind=alerts.send_alert.kind,
        status=JobRecord.Status.FAILED,
        last_error=f"{type(exc).__name__}: {exc} {failing_bot.token}",
        finished_at=timezone.now(),
    )
    client.force_login(User.objects.create_superuser("admin", "admin@example.org", "pw"))
    assert_no_secret(client.get(reverse("queueing:dashboard_json")).content.decode(), failing_bot)


def raise_with_the_token_at_hand(bot: Bot, exc: Exception) -> None:
    token = bot.token  # noqa: F841 -- Sentry sends each frame's local variables
    raise RuntimeError(f"could not reach Telegram: {exc}") from exc


def test_sentry_events_carry_no_token(failing_bot, sentry):
    exc = telegram_error(failing_bot)
    try:
        raise_with_the_token_at_hand(failing_bot, exc)
    except RuntimeError as wrapped:
        sentry_sdk.capture_exception(wrapped)
    sentry_sdk.capture_message(f"Telegram said: {exc}")
    failed_alert_job(failing_bot)
    sentry_sdk.flush()
    events = sentry.events
    assert len(events) >= 2
    serialized = str(events)
    assert "could not reach Telegram" in serialized and "Telegram said" in serialized
    assert_no_secret(serialized, failing_bot)


def test_alert_messages_and_their_history_carry_no_token(failing_bot, settings):
    settings.ALERT_CHAT_IDS = [5001]
    settings.ALERT_RAISE_AFTER = 0
    telegram_cluster_alive()
    exc = telegram_error(failing_bot)
    check = Check("telegram:bot", DOWN, f"Bot API: {exc}")
    assert alerts.evaluate({check.name: check}) == 1
    [message] = JobRecord.objects.filter(kind=alerts.send_alert.kind).values_list("args", flat=True)
    assert "Bot API" in message[1]
    assert_no_secret(message[1], failing_bot)
    assert_no_secret(Alert.objects.get().detail, failing_bot)


@pytest.mark.django_db
def test_every_configured_secret_is_redacted(settings):
    settings.SECRET_KEY = "the-django-secret-key-0123456789"
    settings.METRICS_TOKEN = "metrics-bearer-token"
    settings.DATABASE_URL = "postgres://pledge:db%2Fpass%40word@db.internal:5432/pledgebot"
    settings.REDIS_URL = "redis://:redis-password@cache.internal:6379/0"
    settings.SENTRY_DSN = "http://sentrypublickey@127.0.0.1/2"
    bot = Bot.objects.create(token=make_token(7000002, SECRET_HALF), webhook_secret="the-webhook-secret")
    text = (
        f"{settings.SECRET_KEY} {settings.METRICS_TOKEN} {settings.DATABASE_URL} db/pass@word "
        f"{settings.REDIS_URL} {settings.SENTRY_DSN} {bot.token} half={SECRET_HALF} the-webhook-secret"
    )
    redacted = redaction.redact(text)
    for secret in [
        "the-django-secret-key",
        "metrics-bearer-token",
        "db%2Fpass%40word",
        "db/pass@word",
        "redis-password",
        "sentrypublickey",
        SECRET_HALF,
        "the-webhook-secret",
    ]:
        assert secret not in redacted
    assert "db.internal:5432/pledgebot" in redacted and "cache.internal" in redacted


def test_an_unknown_token_is_redacted_by_its_shape():
    unknown = make_token(424242, "Z" * 35)
    assert redaction.redact(f"GET /bot{unknown}/getMe failed") == "GET /bot[redacted]/getMe failed"


@pytest.mark.django_db
def test_a_new_bot_s_token_is_redacted_at_once():
    redaction.redact("warm the cache")
    bot = Bot.objects.create(token="123:short-secret", webhook_secret="another-webhook-secret")
    assert redaction.redact(f"{bot.token} and another-webhook-secret") == "[redacted] and [redacted]"


@pytest.mark.e2e
def test_a_rejected_token_reaches_no_cluster_log_and_no_column_end_to_end(
    clusters, webhook_bot, fake_telegram, settings
):
    """The issue's reproduction: Telegram rejects the token while a real telegram cluster answers
    /start and sends an alert."""
    settings.TELEGRAM_BOT_TOKEN = ""
    token = webhook_bot.token
    Bot.objects.filter(pk=webhook_bot.pk).update(api_base_url=f"{fake_telegram.url}/nowhere/bot")
    cluster = clusters.start("telegram", TELEGRAM_BOT_TOKEN="", QUEUE_TELEGRAM_WORKERS="1")
    fake_telegram.push_update(token, updates.text_message(token, "/start"))
    alert = alerts.send_alert.enqueue_with(args=[5001, "hello"], label="alert to 5001")

    # A rejected token holds the bot's work like an outage: the update and the alert wait.
    record = wait_for(
        lambda: JobRecord.objects.filter(pk=alert.pk).exclude(traceback="").first(), what="the alert to be refused"
    )
    assert record.last_error == "ServiceUnavailable: Telegram unreachable: token rejected"
    assert "InvalidToken: The token `[redacted]` was rejected by the server." in record.traceback
    assert Circuit.objects.get().reason == "token rejected"
    wait_for(lambda: "unreachable (token rejected)" in cluster.log(), what="the outage in the log")
    assert token.partition(":")[2] not in cluster.log()
    for columns in JobRecord.objects.values_list("last_error", "traceback"):
        assert token.partition(":")[2] not in "".join(columns)
