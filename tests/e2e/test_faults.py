"""The fault suite: real clusters against the fake Telegram while it fails the way Telegram
does. Each test states every member's end state at the fake Telegram: exactly one copy, or
`unknown` to operators; never "done" when it was not.

Long waits are scaled down by settings (a 10 s job timeout against a 12 s flood wait, a 2 s
probe interval), never by another code path."""

import itertools
import math
import time
from collections import Counter
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from bots.models import TelegramUser, Update
from bots.tasks import WORKER_DIED
from broadcasts.models import Broadcast, Delivery
from broadcasts.tasks import send_deliveries, start_broadcast
from queueing import circuit
from queueing.models import Circuit, JobRecord
from queueing.queues import dispatch_ids_in_broker
from tests import jobs
from tests.fake_telegram import make_user, updates
from tests.stalls import killed_now, report_stalls
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

# A retry backoff short enough that, were an outage spending attempts, they would all be spent
# long before it ends.
OUTAGE_ENV = {"QUEUE_TELEGRAM_BACKOFF": "0.2", "TELEGRAM_OUTAGE_PROBE_MAX": "2", "TELEGRAM_RATE_LIMIT": "100"}
PROBES = 3


def make_members(bot, count: int, first_id: int = 3_000_000) -> list[TelegramUser]:
    return TelegramUser.objects.bulk_create(
        TelegramUser(bot=bot, telegram_id=first_id + n, first_name=f"M{n}", is_subscribed=True) for n in range(count)
    )


def delivered(fake, method: str = "sendMessage") -> Counter:
    """chat id -> messages Telegram accepted for it."""
    return Counter(call.params["chat_id"] for call in fake.calls(method) if call.status == 200)


def broadcast_to_everyone(bot) -> Broadcast:
    broadcast = Broadcast.objects.create(bot=bot, text="Hello #first_name")
    start_broadcast.enqueue(broadcast.pk)
    return broadcast


def status_of(broadcast: Broadcast) -> str:
    broadcast.refresh_from_db()
    return broadcast.status


def report(fault: str, members: set, copies: Counter, unknown: set, since: float) -> None:
    """One line per fault for the closing notes: `pytest tests/e2e/test_faults.py -s | grep FAULT`."""
    lost = members - set(copies) - unknown
    duplicated = [chat for chat in members if copies[chat] > 1]
    print(
        f"\nFAULT | {fault} | affected {len(members)} | lost {len(lost)} | duplicated {len(duplicated)}"
        f" | unknown {len(unknown)} | recovered in {time.monotonic() - since:.1f} s"
    )


def assert_exactly_once_or_unknown(broadcast: Broadcast, fake, fault: str = "", since: float = 0.0) -> Counter:
    """Every member got one copy, or is shown `unknown`; the counts say so. Returns the
    deliveries' statuses."""
    copies = delivered(fake)
    assert max(copies.values(), default=1) == 1, "nobody got the broadcast twice"
    statuses = Counter(broadcast.deliveries.values_list("status", flat=True))
    unknown = set(broadcast.deliveries.filter(status=Delivery.Status.UNKNOWN).values_list("chat_id", flat=True))
    members = set(broadcast.deliveries.values_list("chat_id", flat=True))
    assert set(copies) | unknown == members, "every member has their copy or is shown unknown"
    sent = set(broadcast.deliveries.filter(status=Delivery.Status.SENT).values_list("chat_id", flat=True))
    assert sent <= set(copies), "never 'sent' when it was not"
    if fault:
        report(fault, members, copies, unknown, since)
    return statuses


def test_members_who_wrote_during_an_outage_are_answered_once_when_telegram_is_back(
    webhook_bot, fake_telegram, clusters
):
    clusters.start("telegram", **OUTAGE_ENV)
    fake_telegram.fail("bad_gateway", method="sendMessage")
    members = [make_user(4000 + n, first_name=f"Ann{n}") for n in range(10)]

    for user in members:
        fake_telegram.push_update(webhook_bot.token, updates.text_message(webhook_bot.token, "/start", user=user))

    wait_for(lambda: Circuit.objects.exists(), what="the outage to be noticed")
    # Long enough that attempts, were they spent, would all be gone (0.2 s, 0.6 s, 1.8 s).
    wait_for(lambda: len(fake_telegram.calls("sendMessage")) >= 4, timeout=30, what="probes during the outage")
    assert not JobRecord.objects.failed().exists()
    assert not Update.objects.filter(status=Update.Status.FAILED).exists()

    fake_telegram.clear_faults()
    back = time.monotonic()

    for user in members:
        fake_telegram.wait_for_calls(1, method="sendMessage", chat_id=user["id"], timeout=30)
    wait_for(
        lambda: not Update.objects.exclude(status=Update.Status.PROCESSED).exists(),
        what="every update to be processed",
    )
    copies = delivered(fake_telegram)
    report("Telegram 502, members writing", {user["id"] for user in members}, copies, set(), back)
    assert {user["id"]: copies[user["id"]] for user in members} == {user["id"]: 1 for user in members}
    wait_for(lambda: not Circuit.objects.exists(), what="the circuit to close")
    assert not JobRecord.objects.failed().exists()


def test_a_broadcast_during_an_outage_probes_one_request_at_a_time_and_then_serves_each_member_once(
    telegram_bot, fake_telegram, clusters
):
    make_members(telegram_bot, 60)
    clusters.start("telegram", **OUTAGE_ENV)
    clusters.start("broadcasts", **OUTAGE_ENV)
    fake_telegram.delay(0.05, method="sendMessage")  # about 20 a second: the outage starts mid-way
    broadcast = broadcast_to_everyone(telegram_bot)
    wait_for(lambda: len(delivered(fake_telegram)) >= 10, what="sending to be under way")

    fake_telegram.fail("bad_gateway", method="sendMessage")
    down = time.time()
    wait_for(
        lambda: status_of(broadcast) == Broadcast.Status.SENDING and broadcast.stall_reason.startswith("Telegram"),
        timeout=30,
        what="the stall to be shown",
    )
    assert "unreachable since" in broadcast.stall_reason
    # Telegram stays down until the platform has come back to it PROBES times.
    bursts = wait_for(
        lambda: len(refused := refused_bursts(fake_telegram, down)) > PROBES and refused,
        timeout=60,
        what=f"{PROBES} probes during the outage",
    )
    fake_telegram.clear_faults()
    back = time.monotonic()
    print(f"\nOUTAGE | requests refused while Telegram was down, (s after it went down, how many): {bursts}")
    # The first burst left before the first refusal came back. After it, one request a probe,
    # never every send scheduled, and a failed probe puts the next one twice as far off as
    # the first (OUTAGE_ENV caps it there): Telegram is not hammered while it is down.
    probes = bursts[1:]
    assert [size for _, size in probes] == [1] * len(probes), "one request a probe"
    gaps = [later - earlier for (earlier, _), (later, _) in itertools.pairwise(probes)]
    assert min(gaps) >= 2 * circuit.PROBE_FIRST, f"probes {gaps} s apart"

    wait_for(lambda: status_of(broadcast) == Broadcast.Status.DONE, timeout=60, what="the broadcast to finish")
    statuses = assert_exactly_once_or_unknown(broadcast, fake_telegram, "Telegram 502 mid-broadcast", back)
    assert statuses == {Delivery.Status.SENT: 60}
    assert broadcast.stall_reason == ""
    assert not JobRecord.objects.failed().exists()


def refused_bursts(fake, since: float, gap: float = 0.5) -> list[tuple[float, int]]:
    """The sendMessage requests the fake refused (5xx) since `since`, in bursts of requests
    less than `gap` seconds apart: (when the burst began, seconds after `since`; its size)."""
    refused = [c for c in fake.calls("sendMessage") if c.received_at >= since and (c.status or 0) >= 500]
    times = sorted(c.received_at - since for c in refused)
    bursts: list[tuple[float, int]] = []
    for previous, at in zip([-math.inf, *times[:-1]], times, strict=True):
        if at - previous < gap:
            bursts[-1] = (bursts[-1][0], bursts[-1][1] + 1)
        else:
            bursts.append((at, 1))
    return bursts


@pytest.mark.parametrize(
    ("members", "queue", "env"),
    [
        (20, "telegram", {"QUEUE_TELEGRAM_TIMEOUT": "10"}),
        (300, "broadcasts", {"QUEUE_BROADCASTS_TIMEOUT": "10"}),
    ],
    ids=["small broadcast", "large broadcast"],
)
def test_a_flood_wait_longer_than_the_job_defers_it_and_loses_nothing(
    telegram_bot, fake_telegram, clusters, members, queue, env
):
    chat_ids = [m.telegram_id for m in make_members(telegram_bot, members)]
    clusters.start("telegram", TELEGRAM_RATE_LIMIT="100", **env)
    if queue == "broadcasts":
        clusters.start("broadcasts", TELEGRAM_RATE_LIMIT="100", **env)
    # Midway through: 12 s, longer than what is left of the 10 s job (room for a busy machine).
    fake_telegram.fail("rate_limit", method="sendMessage", chat_id=chat_ids[members // 2], retry_after=12, times=1)

    broadcast = broadcast_to_everyone(telegram_bot)
    began = time.monotonic()

    wait_for(lambda: status_of(broadcast) == Broadcast.Status.DONE, timeout=60, what="the broadcast to finish")
    fault = f"429 retry_after 12 s, {members}-member broadcast, 10 s job"
    statuses = assert_exactly_once_or_unknown(broadcast, fake_telegram, fault, began)
    assert statuses == {Delivery.Status.SENT: members}, "0 missed, 0 duplicated, 0 unknown"
    senders = JobRecord.objects.of_kinds(send_deliveries)
    assert senders.filter(queue=queue).exists()
    assert not senders.failed().exists()
    assert any("flood control" in error for error in senders.values_list("last_error", flat=True))


def test_a_send_telegram_answers_after_the_client_gave_up_is_unknown_and_never_sent_again(
    telegram_bot, fake_telegram, clusters
):
    make_members(telegram_bot, 10)
    fake_telegram.delay(2.0, method="sendMessage", answer_late=True)
    clusters.start("telegram", TELEGRAM_READ_TIMEOUT="1")

    broadcast = broadcast_to_everyone(telegram_bot)

    wait_for(lambda: status_of(broadcast) == Broadcast.Status.DONE, timeout=60, what="the broadcast to finish")
    wait_for(lambda: len(delivered(fake_telegram)) == 10, what="the slow answers to be given")
    fault = "answers after the client's timeout, broadcast"
    statuses = assert_exactly_once_or_unknown(broadcast, fake_telegram, fault, time.monotonic())
    assert statuses == {Delivery.Status.UNKNOWN: 10}
    assert set(broadcast.deliveries.values_list("error", flat=True)) == {
        "Telegram did not answer within 1 s: it may have arrived, so it is not sent again."
    }
    assert broadcast.progress()["counts"]["unknown"] == 10


def test_a_reply_telegram_answers_too_late_is_not_sent_again(webhook_bot, fake_telegram, clusters):
    fake_telegram.delay(2.0, method="sendMessage", answer_late=True)
    clusters.start("telegram", TELEGRAM_READ_TIMEOUT="1")
    members = [make_user(4100 + n) for n in range(5)]

    for user in members:
        fake_telegram.push_update(webhook_bot.token, updates.text_message(webhook_bot.token, "/help", user=user))

    wait_for(
        lambda: Update.objects.filter(status=Update.Status.FAILED).count() == 5,
        timeout=30,
        what="the updates to end",
    )
    wait_for(lambda: len(delivered(fake_telegram)) == 5, what="the slow answers to be given")
    assert delivered(fake_telegram) == {user["id"]: 1 for user in members}
    assert all("may have arrived" in error for error in Update.objects.values_list("error", flat=True))


def test_eight_kills_in_a_row_the_broadcast_still_finishes_and_nobody_gets_two(telegram_bot, fake_telegram, clusters):
    members = make_members(telegram_bot, 300)
    env = {"TELEGRAM_RATE_LIMIT": "40", "QUEUE_BROADCASTS_TIMEOUT": "20", "QUEUE_BROADCASTS_BACKOFF": "0.2"}
    clusters.start("telegram", **env)
    broadcast = broadcast_to_everyone(telegram_bot)

    kills = []
    for kill in range(8):
        sent_before = len(delivered(fake_telegram))
        cluster = clusters.start("broadcasts", **env)
        wait_for(
            lambda sent_before=sent_before: len(delivered(fake_telegram)) > sent_before,
            timeout=40,
            what=f"sending to go on after kill {kill}",
        )
        cluster.kill()
        kills.append(killed_now())
    clusters.start("broadcasts", **env)
    restarted = time.monotonic()

    wait_for(lambda: status_of(broadcast) == Broadcast.Status.DONE, timeout=120, what="the broadcast to finish")
    fault = "8 SIGKILLs of the broadcasts cluster"
    statuses = assert_exactly_once_or_unknown(broadcast, fake_telegram, fault, restarted)
    assert statuses[Delivery.Status.SENT] + statuses[Delivery.Status.UNKNOWN] == len(members)
    report_stalls(fake_telegram, kills, fault)


def taken_ahead_of_the_workers(record: JobRecord) -> bool:
    """Its task is in no broker a second after its dispatch: a cluster took it (a push takes
    milliseconds) and has not started it."""
    record.refresh_from_db()
    dispatched_a_while_ago = record.dispatched_at < timezone.now() - timedelta(seconds=1)
    in_broker = str(record.dispatch_id) in dispatch_ids_in_broker(record.queue)
    return record.status == JobRecord.Status.QUEUED and dispatched_a_while_ago and not in_broker


def test_a_sender_the_killed_cluster_took_and_never_started_sends_as_soon_as_a_cluster_is_back(
    telegram_bot, fake_telegram, clusters
):
    """django-q2 takes tasks ahead of its workers: with its one worker busy, the broadcasts
    cluster holds the broadcast's sender when it is killed. The restarted cluster dispatches
    it again before taking anything, not after recover_lost_jobs' patience (twice the queue's
    timeout: ten minutes) while the broadcast counted as busy."""
    members = make_members(telegram_bot, 150)  # not a small broadcast: sent on the broadcasts queue
    env = {"TELEGRAM_RATE_LIMIT": "100", "QUEUE_BROADCASTS_WORKERS": "1"}
    clusters.start("telegram", **env)
    first = clusters.start("broadcasts", **env)
    busy = jobs.sleep_for.enqueue_with(args=[60], queue="broadcasts")
    wait_for(
        lambda: JobRecord.objects.filter(pk=busy.pk, status=JobRecord.Status.RUNNING).exists(),
        what="the worker to be busy",
    )
    broadcast = broadcast_to_everyone(telegram_bot)
    sender = wait_for(lambda: JobRecord.objects.of_kinds(send_deliveries).first(), what="the sender")
    wait_for(lambda: taken_ahead_of_the_workers(sender), what="the cluster to take the sender ahead of its worker")

    first.kill()
    killed_at = killed_now()
    # It only kept the worker busy: not run again.
    JobRecord.objects.filter(pk=busy.pk).update(status=JobRecord.Status.CANCELLED, finished_at=timezone.now())
    clusters.start("broadcasts", **env)
    restarted = time.monotonic()

    wait_for(lambda: status_of(broadcast) == Broadcast.Status.DONE, timeout=60, what="the broadcast to finish")
    fault = "SIGKILL of the broadcasts cluster holding the sender it had not started"
    statuses = assert_exactly_once_or_unknown(broadcast, fake_telegram, fault, restarted)
    assert statuses == {Delivery.Status.SENT: len(members)}
    report_stalls(fake_telegram, [killed_at], fault)


def test_a_rejected_token_pauses_the_broadcast_until_it_is_fixed_and_resumed(telegram_bot, fake_telegram, clusters):
    make_members(telegram_bot, 30)
    fake_telegram.fail("unauthorized", method="sendMessage")
    clusters.start("telegram", TELEGRAM_OUTAGE_PROBE_MAX="1")

    broadcast = broadcast_to_everyone(telegram_bot)

    wait_for(lambda: status_of(broadcast) == Broadcast.Status.PAUSED, timeout=30, what="the broadcast to pause")
    assert "rejected the bot's token" in broadcast.stall_reason
    assert Circuit.objects.get().reason == "token rejected"
    assert not delivered(fake_telegram)

    fake_telegram.clear_faults()
    assert broadcast.resume()
    start_broadcast.enqueue(broadcast.pk)
    resumed = time.monotonic()

    wait_for(lambda: status_of(broadcast) == Broadcast.Status.DONE, timeout=60, what="the rest to be sent")
    statuses = assert_exactly_once_or_unknown(broadcast, fake_telegram, "token rejected, fixed, resumed", resumed)
    assert statuses == {Delivery.Status.SENT: 30}
    assert not Circuit.objects.exists()


def test_killing_the_telegram_cluster_mid_traffic_answers_each_member_once_or_says_so(
    webhook_bot, fake_telegram, clusters
):
    fake_telegram.delay(0.3, method="sendMessage", answer_late=True)  # kills land mid-send
    # The killed cluster's prefetched tasks count as lost after the timeout: keep it short.
    env = {"QUEUE_TELEGRAM_TIMEOUT": "8"}
    first = clusters.start("telegram", **env)
    members = [make_user(4200 + n) for n in range(30)]
    for user in members:
        fake_telegram.push_update(webhook_bot.token, updates.text_message(webhook_bot.token, "/help", user=user))
    wait_for(lambda: len(delivered(fake_telegram)) >= 5, what="replies to be under way")

    first.kill()
    killed_at = killed_now()
    clusters.start("telegram", **env)
    restarted = time.monotonic()

    wait_for(
        lambda: not Update.objects.filter(status__in=[Update.Status.RECEIVED, Update.Status.ENQUEUED]).exists(),
        timeout=60,
        what="every update to end",
    )
    copies = delivered(fake_telegram)
    failed = dict(Update.objects.filter(status=Update.Status.FAILED).values_list("chat_id", "error"))
    assert max(copies.values()) == 1, "nobody was answered twice"
    assert {user["id"] for user in members} == set(copies) | set(failed), "answered, or shown as failed"
    assert set(failed.values()) <= {WORKER_DIED}
    fault = "SIGKILL of the telegram cluster mid-replies"
    report(fault, {u["id"] for u in members}, copies, set(failed), restarted)
    report_stalls(fake_telegram, [killed_at], fault)


def _kill_database_connections() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return cursor.fetchone()[0]


def _kill_redis_connections() -> int:
    """Every client connection to this test run's Redis database, as a restart would drop them."""
    import redis

    client = redis.from_url(settings.REDIS_URL)
    db = client.connection_pool.connection_kwargs.get("db", 0)
    mine = client.client_id()
    ids = [c["id"] for c in client.client_list() if int(c["db"]) == db and int(c["id"]) != mine]
    for client_id in ids:
        client.client_kill_filter(_id=client_id)
    return len(ids)


@pytest.mark.parametrize(
    "kill_connections",
    [
        pytest.param(
            _kill_database_connections,
            id="postgresql",
            marks=pytest.mark.skipif(
                not settings.DATABASES["default"]["ENGINE"].endswith("postgresql"), reason="PostgreSQL only"
            ),
        ),
        pytest.param(
            _kill_redis_connections, id="redis", marks=pytest.mark.skipif(not settings.REDIS_URL, reason="Redis only")
        ),
    ],
)
def test_connections_dropped_mid_broadcast_lose_and_duplicate_nothing(
    telegram_bot, fake_telegram, clusters, kill_connections
):
    make_members(telegram_bot, 300)
    env = {"TELEGRAM_RATE_LIMIT": "100"}
    clusters.start("telegram", **env)
    clusters.start("broadcasts", **env)
    broadcast = broadcast_to_everyone(telegram_bot)
    for _ in range(3):
        sent_before = len(delivered(fake_telegram))
        wait_for(lambda sent_before=sent_before: len(delivered(fake_telegram)) >= sent_before + 40, timeout=30)
        assert kill_connections() > 0
    killed = time.monotonic()

    wait_for(lambda: status_of(broadcast) == Broadcast.Status.DONE, timeout=120, what="the broadcast to finish")
    fault = f"connections dropped 3 times mid-broadcast ({kill_connections.__name__})"
    statuses = assert_exactly_once_or_unknown(broadcast, fake_telegram, fault, killed)
    assert statuses[Delivery.Status.SENT] + statuses[Delivery.Status.UNKNOWN] == 300
