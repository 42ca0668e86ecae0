"""The retry model's parts, without clusters: the circuit, how failed requests are told
apart, updates handed on when their job ended, and an outage logged once."""

import logging
import socket
import time
from datetime import timedelta

import pytest
from django.db import OperationalError
from django.utils import timezone

from bots import handlers, telegram_api
from bots.inbox import hand_on_orphans
from bots.models import TelegramUser, Update
from bots.tasks import ANSWERED_THEN_FAILED, WORKER_DIED, handle_one, handle_update
from broadcasts.models import Broadcast, Delivery
from broadcasts.recovery import REPEATED_FAILURES, resume_stranded
from broadcasts.sending import BroadcastSender, fan_out, finish_if_complete
from broadcasts.tasks import send_deliveries, start_broadcast
from queueing import circuit, health, models, queues
from queueing.errors import (
    DEFERRED,
    MAYBE_DONE,
    Deferred,
    MaybeDone,
    RateLimited,
    RetriableError,
    ServiceUnavailable,
    classify,
)
from queueing.jobs import BrokerOutages
from queueing.models import Circuit, JobRecord
from queueing.queues import get_queue
from tests.fake_telegram import make_user, updates


@pytest.fixture(autouse=True)
def forget_circuits():
    circuit._seen_open.clear()
    circuit._probing.clear()
    yield
    circuit._seen_open.clear()
    circuit._probing.clear()


@pytest.mark.django_db
def test_a_circuit_lets_one_probe_through_when_it_is_due_and_closes_on_success():
    assert circuit.wait_for("svc") is None, "closed: go ahead"
    outage = circuit.trip("svc", "502 Bad Gateway")
    assert outage.reason == "502 Bad Gateway" and 0 < outage.wait <= circuit.PROBE_FIRST

    waiting = circuit.wait_for("svc")
    assert waiting is not None and waiting.wait > 0, "open: wait for the probe"

    Circuit.objects.filter(key="svc").update(probe_at=timezone.now() - timedelta(seconds=1))
    assert circuit.wait_for("svc") is None, "this caller is the probe"
    assert circuit.wait_for("svc") is None, "the probe's own calls go ahead"
    circuit._probing.clear()  # another process
    assert circuit.wait_for("svc").wait == circuit.PROBE_BUSY_WAIT, "one probe at a time"

    circuit.reset("svc")
    assert not Circuit.objects.exists()
    assert circuit.wait_for("svc") is None


@pytest.mark.django_db
def test_a_failed_probe_puts_the_next_one_further_off_and_other_failures_do_not():
    circuit.trip("svc", "down")
    first_probe = Circuit.objects.get().probe_at
    circuit.trip("svc", "still down")  # a send that was already on its way
    assert Circuit.objects.get().probe_at == first_probe

    Circuit.objects.update(probe_at=timezone.now() - timedelta(seconds=1))
    assert circuit.wait_for("svc") is None
    circuit.trip("svc", "the probe failed")
    row = Circuit.objects.get()
    assert row.probing_until is None and row.failures == 3
    assert row.probe_at > timezone.now() + timedelta(seconds=circuit.PROBE_FIRST)


@pytest.mark.django_db
def test_an_outage_is_logged_when_it_starts_and_when_it_ends_not_for_every_call(caplog):
    caplog.set_level(logging.WARNING, logger="queueing.circuit")
    for _ in range(20):
        circuit.trip("svc", "502")
    circuit.reset("svc")
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert "unreachable (502)" in messages[0] and "reachable again" in messages[1]


def test_a_broker_outage_logs_one_traceback_then_a_summary_a_minute_then_the_end(caplog):
    caplog.set_level(logging.WARNING, logger="queueing.jobs")
    outages = BrokerOutages()
    record = JobRecord(pk=1, queue="telegram")
    try:
        raise ConnectionError("Redis is away")
    except ConnectionError:
        for _ in range(500):
            outages.failed(record)
        outages.down["telegram"][1] -= BrokerOutages.SUMMARY_EVERY
        outages.failed(record)
    outages.worked("telegram")
    outages.worked("telegram")

    records = caplog.records
    assert len(records) == 3
    assert records[0].exc_info and "unreachable" in records[0].getMessage()
    assert "500 more jobs" in records[1].getMessage() and not records[1].exc_info
    assert "reachable again" in records[2].getMessage()


@pytest.mark.django_db
def test_telegram_answering_5xx_opens_the_circuit_and_nothing_is_spent(telegram_bot, fake_telegram):
    fake_telegram.fail("bad_gateway", method="sendMessage")

    with pytest.raises(ServiceUnavailable) as raised:
        telegram_api.call(telegram_bot, "send_message", chat_id=1, text="hi")

    assert classify(raised.value).error_class == DEFERRED
    assert Circuit.objects.get().reason == "Telegram answered 502 Bad Gateway"
    with pytest.raises(ServiceUnavailable):
        telegram_api.call(telegram_bot, "send_message", chat_id=1, text="hi")
    assert len(fake_telegram.calls("sendMessage")) == 1, "nothing is sent while the circuit is open"


@pytest.mark.django_db
def test_telegram_that_cannot_be_reached_opens_the_circuit(telegram_bot):
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    telegram_bot.api_base_url = f"http://127.0.0.1:{port}/bot"

    with pytest.raises(ServiceUnavailable):
        telegram_api.call(telegram_bot, "send_message", chat_id=1, text="hi")

    assert "could not be reached" in Circuit.objects.get().reason


@pytest.mark.django_db
def test_a_request_that_got_no_answer_may_have_arrived(telegram_bot, fake_telegram, settings):
    settings.TELEGRAM_READ_TIMEOUT = 0.3
    telegram_api._state["pid"] = None  # a new client with the shorter timeout
    fake_telegram.delay(1.0, method="sendMessage", answer_late=True)

    with pytest.raises(MaybeDone) as raised:
        telegram_api.call(telegram_bot, "send_message", chat_id=1, text="hi")

    telegram_api._state["pid"] = None
    assert classify(raised.value).error_class == MAYBE_DONE
    assert str(raised.value) == "Telegram did not answer within 0.3 s"
    assert not Circuit.objects.exists()
    fake_telegram.wait_for_calls(1, method="sendMessage")


@pytest.mark.django_db
def test_a_rejected_token_holds_replies_like_an_outage(telegram_bot, fake_telegram):
    fake_telegram.fail("unauthorized", method="sendMessage")

    with pytest.raises(ServiceUnavailable):
        telegram_api.call(telegram_bot, "send_message", chat_id=1, text="hi")

    assert Circuit.objects.get().reason == "token rejected"


def _update(bot, update_id: int, **fields) -> Update:
    payload = updates.text_message(bot.token, "/help", user=make_user(9000 + update_id))
    payload["update_id"] = update_id
    return Update.objects.create(bot=bot, update_id=update_id, payload=payload, chat_id=9000 + update_id, **fields)


@pytest.mark.django_db
def test_an_enqueued_update_whose_job_ended_goes_back_to_the_dispatcher(telegram_bot):
    long_ago = timezone.now() - timedelta(minutes=1)
    ended = JobRecord.objects.create(queue="telegram", kind="k", status=JobRecord.Status.FAILED, finished_at=long_ago)
    just_ended = JobRecord.objects.create(
        queue="telegram", kind="k", status=JobRecord.Status.SUCCEEDED, finished_at=timezone.now()
    )
    waiting = JobRecord.objects.create(queue="telegram", kind="k", status=JobRecord.Status.RETRYING)
    orphan = _update(telegram_bot, 1, status=Update.Status.ENQUEUED, job=ended)
    recent = _update(telegram_bot, 2, status=Update.Status.ENQUEUED, job=just_ended)
    kept = _update(telegram_bot, 3, status=Update.Status.ENQUEUED, job=waiting)
    done = _update(telegram_bot, 4, status=Update.Status.PROCESSED, job=ended)

    assert hand_on_orphans() == 1

    statuses = dict(Update.objects.values_list("pk", "status"))
    assert statuses == {
        orphan.pk: Update.Status.RECEIVED,
        recent.pk: Update.Status.ENQUEUED,
        kept.pk: Update.Status.ENQUEUED,
        done.pk: Update.Status.PROCESSED,
    }


@pytest.mark.django_db
def test_an_update_whose_worker_died_while_handling_it_is_not_answered_again(telegram_bot, fake_telegram):
    update = _update(telegram_bot, 5, status=Update.Status.ENQUEUED, handling_since=timezone.now())
    update.bot = telegram_bot

    handle_one(update)

    update.refresh_from_db()
    assert (update.status, update.error) == (Update.Status.FAILED, WORKER_DIED)
    assert not fake_telegram.calls("sendMessage")


@pytest.mark.django_db
def test_an_update_waits_through_an_outage_without_spending_attempts(telegram_bot, fake_telegram):
    fake_telegram.fail("bad_gateway", method="sendMessage")
    update = _update(telegram_bot, 6, status=Update.Status.ENQUEUED)
    update.bot = telegram_bot

    for _ in range(10):
        with pytest.raises(ServiceUnavailable):
            handle_one(Update.objects.select_related("bot").get(pk=update.pk))

    update.refresh_from_db()
    assert (update.status, update.attempts, update.handling_since) == (Update.Status.ENQUEUED, 0, None)


@pytest.mark.django_db
def test_an_update_older_than_the_outage_horizon_is_given_up(telegram_bot, fake_telegram, settings):
    settings.TELEGRAM_OUTAGE_HORIZON = 60
    circuit.trip(telegram_api.circuit_key(telegram_bot.pk), "502")
    update = _update(telegram_bot, 7, status=Update.Status.ENQUEUED)
    Update.objects.filter(pk=update.pk).update(received_at=timezone.now() - timedelta(minutes=2))

    handle_one(Update.objects.select_related("bot").get(pk=update.pk))

    update.refresh_from_db()
    assert update.status == Update.Status.FAILED
    assert update.error.startswith("Given up after 60 s: ServiceUnavailable: Telegram unreachable since")


@pytest.mark.django_db
def test_a_sender_that_finds_telegram_unreachable_defers_with_every_delivery_still_pending(telegram_bot, fake_telegram):

    TelegramUser.objects.bulk_create(
        TelegramUser(bot=telegram_bot, telegram_id=8000 + n, is_subscribed=True) for n in range(5)
    )
    broadcast = Broadcast.objects.create(bot=telegram_bot, text="Hi", status=Broadcast.Status.SENDING)
    fan_out(broadcast)
    fake_telegram.fail("bad_gateway")
    telegram_api._state["pid"] = None  # a fresh process: its first call is getMe

    sender = BroadcastSender(broadcast)
    sender.run()

    telegram_api._state["pid"] = None
    assert sender.deferral is not None and sender.deferral.reason.startswith("Telegram unreachable since")
    assert set(broadcast.deliveries.values_list("status", "attempts")) == {(Delivery.Status.PENDING, 0)}
    assert Circuit.objects.exists()


@pytest.mark.django_db
def test_a_broadcast_blocked_past_the_outage_horizon_pauses_and_sends_the_rest_when_resumed(
    telegram_bot, fake_telegram, settings
):

    settings.TELEGRAM_OUTAGE_HORIZON = 60
    two_minutes_ago = timezone.now() - timedelta(minutes=2)
    TelegramUser.objects.bulk_create(
        TelegramUser(bot=telegram_bot, telegram_id=8200 + n, is_subscribed=True) for n in range(5)
    )
    broadcast = Broadcast.objects.create(
        bot=telegram_bot, text="Hi", status=Broadcast.Status.SENDING, started_at=two_minutes_ago
    )
    fan_out(broadcast)
    # Telegram has been unreachable for two minutes (a simulated clock) and is still down;
    # the next probe is due.
    key = telegram_api.circuit_key(telegram_bot.pk)
    circuit.trip(key, "Telegram answered 502 Bad Gateway")
    Circuit.objects.update(opened_at=two_minutes_ago, probe_at=two_minutes_ago)
    fake_telegram.fail("bad_gateway", method="sendMessage")
    telegram_api._state["pid"] = None  # a fresh process

    blocked = BroadcastSender(broadcast)
    blocked.run()

    broadcast.refresh_from_db()
    assert broadcast.status == Broadcast.Status.PAUSED
    since = timezone.localtime(two_minutes_ago)
    assert broadcast.stall_reason == (
        f"Paused: Telegram unreachable for 1 min since {since:%Y-%m-%d %H:%M}"
        " (Telegram answered 502 Bad Gateway); resume it once Telegram is back."
    )
    assert blocked.deferral is None, "no job waits on"
    assert len(fake_telegram.calls("sendMessage")) == 1, "one probe"
    assert set(broadcast.deliveries.values_list("status", "attempts")) == {(Delivery.Status.PENDING, 0)}
    assert [check.name for check in health.check_circuits()] == [f"outage:{key}"], "the alert stays raised"

    # Telegram is back; an operator resumes the broadcast before any probe has found out.
    fake_telegram.clear_faults()
    Circuit.objects.update(probe_at=timezone.now())
    assert broadcast.resume()
    BroadcastSender(Broadcast.objects.select_related("bot").get(pk=broadcast.pk)).run()

    telegram_api._state["pid"] = None
    assert finish_if_complete(broadcast)
    sent = [call.params["chat_id"] for call in fake_telegram.calls("sendMessage") if call.status == 200]
    assert sorted(sent) == [8200 + n for n in range(5)]
    assert set(broadcast.deliveries.values_list("status", flat=True)) == {Delivery.Status.SENT}
    assert not Circuit.objects.exists()


@pytest.mark.django_db
def test_a_reply_that_ended_an_outage_is_not_sent_again_when_closing_the_circuit_fails(
    telegram_bot, fake_telegram, monkeypatch
):
    key = telegram_api.circuit_key(telegram_bot.pk)
    circuit.trip(key, "502 Bad Gateway")
    Circuit.objects.update(probe_at=timezone.now() - timedelta(seconds=1))

    def locked_database(key):
        raise OperationalError("database is locked")

    monkeypatch.setattr(circuit, "reset", locked_database)
    update = _update(telegram_bot, 8, status=Update.Status.ENQUEUED)

    attempts = 0
    while attempts < handle_update.attempt_budget:  # as the update's job would try it
        try:
            handle_one(Update.objects.select_related("bot").get(pk=update.pk))
        except Deferred as exc:  # waited out, at no attempt's cost
            time.sleep(exc.retry_after)
        except OperationalError:
            attempts += 1
        else:
            break

    answered = [call.params["chat_id"] for call in fake_telegram.calls("sendMessage") if call.status == 200]
    assert answered == [update.chat_id], "the probe's reply reached the member, once"
    update.refresh_from_db()
    assert update.status == Update.Status.FAILED
    assert update.error == f"{ANSWERED_THEN_FAILED} OperationalError: database is locked"


@pytest.mark.django_db
def test_an_update_that_failed_after_its_answer_went_out_is_not_answered_again(telegram_bot, fake_telegram):

    def help_then_a_locked_database(context, argument):
        context.reply("Here is some help.")
        raise OperationalError("database is locked")

    update = _update(telegram_bot, 8, status=Update.Status.ENQUEUED)

    with handlers.answers.replaced("/help", help_then_a_locked_database):
        handle_one(Update.objects.select_related("bot").get(pk=update.pk))

    update.refresh_from_db()
    assert update.status == Update.Status.FAILED
    assert update.error == f"{ANSWERED_THEN_FAILED} OperationalError: database is locked"
    assert len(fake_telegram.calls("sendMessage")) == 1


@pytest.mark.django_db
def test_a_wait_on_the_last_attempt_spends_nothing_and_comes_back_when_the_wait_is_over():
    record = JobRecord.objects.create(queue="telegram", kind="k", status=JobRecord.Status.RUNNING, attempts=4)
    record.max_attempts = 4
    JobRecord.objects.filter(pk=record.pk).update(max_attempts=4)

    status = record.record_failure(ServiceUnavailable(5.0, "Telegram unreachable"))

    record.refresh_from_db()
    assert status == record.status == JobRecord.Status.RETRYING
    assert record.attempts == 3, "the attempt that waited is given back"
    assert 4.5 <= (record.next_retry_at - timezone.now()).total_seconds() <= 5.0


@pytest.mark.django_db
def test_a_429_is_due_again_exactly_retry_after_and_a_failure_after_its_backoff(monkeypatch):
    """With a frozen clock: the end-to-end tests only see that the waits were not cut short."""
    now = timezone.now()
    monkeypatch.setattr(models.timezone, "now", lambda: now)
    monkeypatch.setattr(queues.random, "uniform", lambda low, high: high)  # the jitter's longest
    limited, flaky = (
        JobRecord.objects.create(
            queue="telegram", kind="k", status=JobRecord.Status.RUNNING, attempts=attempts, max_attempts=4
        )
        for attempts in (1, 2)
    )

    limited.record_failure(RateLimited(3))
    flaky.record_failure(RetriableError("flaky"))

    limited.refresh_from_db(), flaky.refresh_from_db()
    assert (limited.next_retry_at, limited.attempts) == (now + timedelta(seconds=3), 0)
    backoff = get_queue("telegram").backoff
    assert (flaky.next_retry_at, flaky.attempts) == (now + timedelta(seconds=backoff * 3 * 1.1), 2)


@pytest.mark.django_db
def test_a_broadcast_left_sending_with_no_job_is_sent_on_or_paused_after_repeated_failures(telegram_bot):

    TelegramUser.objects.create(bot=telegram_bot, telegram_id=8100, is_subscribed=True)
    long_ago = timezone.now() - timedelta(minutes=5)
    crashed = Broadcast.objects.create(
        bot=telegram_bot, text="Hi", status=Broadcast.Status.SENDING, started_at=long_ago
    )
    failing = Broadcast.objects.create(
        bot=telegram_bot, text="Hi", status=Broadcast.Status.SENDING, started_at=long_ago
    )
    for broadcast in (crashed, failing):
        fan_out(broadcast)
    JobRecord.objects.create(
        queue="broadcasts",
        kind=send_deliveries.kind,
        args=[crashed.pk],
        status=JobRecord.Status.FAILED,
        error_class=JobRecord.ErrorClass.LOST,
        finished_at=long_ago,
    )
    for _ in range(REPEATED_FAILURES):
        JobRecord.objects.create(
            queue="broadcasts",
            kind=send_deliveries.kind,
            args=[failing.pk],
            status=JobRecord.Status.FAILED,
            error_class=JobRecord.ErrorClass.RETRIABLE,
            last_error="RuntimeError: a bug",
            finished_at=long_ago,
        )

    assert resume_stranded() == 2

    assert JobRecord.objects.of_kinds(start_broadcast).unfinished().first_args() == {crashed.pk}
    failing.refresh_from_db()
    assert failing.status == Broadcast.Status.PAUSED
    assert failing.stall_reason.endswith("RuntimeError: a bug")
    assert resume_stranded() == 0, "the resumed one has its job"


@pytest.mark.django_db
def test_a_broadcast_left_with_its_fan_out_unfinished_is_carried_on_never_done(telegram_bot, monkeypatch):
    """Every delivery made so far is final, or held for an A/B winner: with members still
    to fan out, the broadcast is neither done nor waiting for its winner."""
    monkeypatch.setattr("broadcasts.sending.FAN_OUT_BATCH", 2)
    TelegramUser.objects.bulk_create(
        TelegramUser(bot=telegram_bot, telegram_id=8300 + n, is_subscribed=True) for n in range(5)
    )
    long_ago = timezone.now() - timedelta(minutes=5)
    sent, held = (
        Broadcast.objects.create(bot=telegram_bot, text="Hi", status=Broadcast.Status.SENDING, started_at=long_ago)
        for _ in range(2)
    )
    for broadcast, status in ((sent, Delivery.Status.SENT), (held, Delivery.Status.HELD)):
        fan_out(broadcast)
        broadcast.deliveries.update(status=status)

    assert resume_stranded() == 2

    assert JobRecord.objects.of_kinds(start_broadcast).unfinished().first_args() == {sent.pk, held.pk}
    assert set(Broadcast.objects.values_list("status", flat=True)) == {Broadcast.Status.SENDING}
