"""How a sender claims deliveries (Delivery.objects.claim, one conditional UPDATE of
claimed_by/claimed_at) and what happens to the rows a dead sender held: two claimers never
get the same row, a stale claim is taken over, and a dead sender's row becomes `unknown`
only once it was marked `sending` (its send may have left)."""

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from broadcasts import sending as sending_module
from broadcasts.models import Broadcast, Delivery
from broadcasts.sending import fan_out
from broadcasts.tasks import send_deliveries
from queueing.models import ClusterHeartbeat
from tests.broadcasts.support import make_members
from tests.fake_telegram.objects import make_token

DEAD = "host-gone:4242:deliveries 1-9:dead"


def fanned_out(bot, members: int) -> tuple[Broadcast, list[int]]:
    make_members(bot, members)
    broadcast = Broadcast.objects.create(bot=bot, text="Hi", status=Broadcast.Status.SENDING)
    fan_out(broadcast)
    return broadcast, list(broadcast.deliveries.order_by("pk").values_list("pk", flat=True))


@pytest.mark.django_db
def test_two_claimers_that_chose_the_same_rows_never_both_get_one(bot):
    broadcast, ids = fanned_out(bot, 6)
    # Both chose their rows before either claimed: the race the conditional UPDATE settles.
    first = Delivery.objects.claim(ids[:4], "first")
    second = Delivery.objects.claim(ids[2:], "second")

    assert first == ids[:4]
    assert second == ids[4:]
    holders = dict(broadcast.deliveries.values_list("pk", "claimed_by"))
    assert [holders[pk] for pk in ids] == ["first"] * 4 + ["second"] * 2
    assert Delivery.objects.start_sending(ids, "second") == 2  # only its own rows


@pytest.mark.django_db
def test_a_stale_claim_is_taken_over_and_a_fresh_one_is_not(bot):
    broadcast, ids = fanned_out(bot, 4)
    Delivery.objects.claim(ids, DEAD)
    stale = timezone.now() - Delivery.CLAIM_STALE - timedelta(seconds=1)
    Delivery.objects.filter(pk__in=ids[:2]).update(claimed_at=stale)

    assert Delivery.objects.claim(ids, "alive") == ids[:2]
    assert list(broadcast.deliveries.order_by("pk").values_list("claimed_by", flat=True)) == [
        "alive",
        "alive",
        DEAD,
        DEAD,
    ]


@pytest.mark.django_db
def test_a_fresh_claim_of_a_machine_whose_clusters_stopped_beating_is_taken_over(bot, settings):
    """A machine that died cannot come back to its claims: waiting out CLAIM_STALE would only
    delay the survivor. A machine that still beats keeps its fresh claims."""
    _, ids = fanned_out(bot, 4)
    Delivery.objects.claim(ids[:2], DEAD)
    Delivery.objects.claim(ids[2:], "host-alive:4343:deliveries 1-9:alive")
    long_ago, now = timezone.now() - timedelta(seconds=settings.HEARTBEAT_TIMEOUT + 1), timezone.now()
    for pid, (machine, seen) in enumerate({"host-gone": long_ago, "host-alive": now}.items()):
        ClusterHeartbeat.objects.create(
            queue="broadcasts", host=machine, pid=pid + 1, workers=2, started_at=long_ago, last_seen=seen
        )

    assert Delivery.objects.claim(ids, "survivor") == ids[:2]


@pytest.mark.django_db
def test_a_claim_is_released_when_the_row_leaves_sending_and_when_it_goes_back_to_pending(bot):
    broadcast, ids = fanned_out(bot, 3)
    Delivery.objects.claim(ids, "sender")
    Delivery.objects.start_sending(ids, "sender")
    Delivery.objects.filter(pk=ids[0]).update(status=Delivery.Status.FAILED)
    Broadcast.objects.filter(pk=broadcast.pk).update(status=Broadcast.Status.DONE)

    assert broadcast.retry_failed() == 1
    again = Delivery.objects.get(pk=ids[0])
    assert (again.status, again.claimed_by, again.claimed_at) == (Delivery.Status.PENDING, "", None)


@pytest.mark.filterwarnings("ignore:Please use 'Bot.send")
def test_a_dead_senders_rows_become_unknown_only_if_their_sends_may_have_left(telegram_bot, fake_telegram):
    """Rows it marked `sending` may have reached the member: `unknown`, never resent. Rows it
    had only claimed ahead (it died before marking them) are sent at once, not once its claim
    is stale: the next sender holds the bot's lock, so their claimer is dead."""
    broadcast, ids = fanned_out(telegram_bot, 6)
    left, claimed_only = ids[:2], ids[2:4]
    Delivery.objects.claim(left + claimed_only, DEAD)
    Delivery.objects.start_sending(left, DEAD)

    outcome = send_deliveries(broadcast.pk)

    assert outcome["sent"] == 4
    states = dict(broadcast.deliveries.values_list("pk", "status"))
    assert [states[pk] for pk in ids] == ["unknown"] * 2 + ["sent"] * 4
    assert not broadcast.deliveries.exclude(claimed_by="").exists()
    members = dict(broadcast.deliveries.values_list("pk", "chat_id"))
    assert sorted(c.chat_id for c in fake_telegram.calls("sendMessage")) == sorted(members[pk] for pk in ids[2:])


def test_claimers_racing_for_the_same_rows_share_them_out(transactional_db, bot):
    """Two threads, each its own database connection, claim the same rows in small batches
    at the same time: every row is won exactly once."""
    broadcast, ids = fanned_out(bot, 200)
    start = threading.Barrier(2)
    won: dict[str, list[int]] = {}

    def claimer(name: str) -> None:
        start.wait()
        mine = won.setdefault(name, [])
        try:
            for i in range(0, len(ids), 10):
                mine += Delivery.objects.claim(ids[i : i + 20], name)
        finally:
            connection.close()

    threads = [threading.Thread(target=claimer, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(won["a"] + won["b"]) == ids
    holders = dict(broadcast.deliveries.values_list("pk", "claimed_by"))
    assert all(holders[pk] == "a" for pk in won["a"]) and all(holders[pk] == "b" for pk in won["b"])


@pytest.mark.django_db(transaction=True)
def test_the_migration_moves_blocked_out_of_the_error_text_and_claims_out_of_it():
    before, after = ("broadcasts", "0011_delivery_claim_and_blocked"), ("broadcasts", "0012_delivery_blocked_class")
    executor = MigrationExecutor(connection)
    executor.migrate([before])
    old = executor.loader.project_state([before]).apps
    old_bot = old.get_model("bots", "Bot").objects.create(token=make_token(7100009), telegram_id=7100009)
    OldDelivery = old.get_model("broadcasts", "Delivery")
    broadcast = old.get_model("broadcasts", "Broadcast").objects.create(bot=old_bot, text="Hi")
    member = old.get_model("bots", "TelegramUser")
    for n, (error, error_class) in enumerate(
        [
            ("blocked: Forbidden: bot was blocked by the user", "permanent"),
            ("claimed by 140234", ""),
            ("BadRequest: chat not found", "permanent"),
        ]
    ):
        who = member.objects.create(bot=old_bot, telegram_id=n)
        OldDelivery.objects.create(broadcast=broadcast, member=who, chat_id=n, error=error, error_class=error_class)

    executor = MigrationExecutor(connection)
    executor.migrate([after])
    moved = executor.loader.project_state([after]).apps.get_model("broadcasts", "Delivery")
    rows = list(moved.objects.order_by("chat_id").values_list("error", "error_class"))
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())  # as the other tests expect it

    assert rows == [
        ("The member blocked the bot (Forbidden: bot was blocked by the user)", "blocked"),
        ("", ""),
        ("BadRequest: chat not found", "permanent"),
    ]


@pytest.mark.filterwarnings("ignore:Please use 'Bot.send")
def test_rows_cancelled_between_their_claim_and_their_sends_are_not_sent(telegram_bot, fake_telegram, monkeypatch):
    broadcast, _ = fanned_out(telegram_bot, 5)
    render = sending_module.render

    def cancelled_while_rendering(*args, **kwargs):
        Broadcast.objects.get(pk=broadcast.pk).cancel()
        return render(*args, **kwargs)

    monkeypatch.setattr(sending_module, "render", cancelled_while_rendering)

    send_deliveries(broadcast.pk)

    assert fake_telegram.calls("sendMessage") == []
    assert set(broadcast.deliveries.values_list("status", flat=True)) == {Delivery.Status.CANCELLED}
