"""How a broadcast sender spaces its sends (broadcasts.sending.Departures): on a simulated
clock, then for real against the fake Telegram enforcing 30 messages per second."""

import asyncio
import heapq
import itertools
import random
import time
from datetime import timedelta

import pytest
from django.db import connections
from django.utils import timezone

from bots.models import TelegramUser
from broadcasts.models import Broadcast, Delivery, Pledge
from broadcasts.sending import CATCH_UP, BroadcastSender, Departures, fan_out, finish_if_complete
from broadcasts.tasks import send_deliveries, start_broadcast
from queueing.departures import DatabaseDepartureLog, window
from queueing.errors import Deferred
from queueing.models import JobRecord

LIMIT, MARGIN = 30, 0.005
RATE = LIMIT * (1 - MARGIN)


class SimulatedClock:
    """time.monotonic and asyncio.sleep for one sender; every sleep wakes up to `oversleep`
    late, as a busy event loop does."""

    def __init__(self, oversleep: float = 0.0):
        self.now = 1000.0
        self.oversleep = oversleep
        self.random = random.Random(4)

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds + self.random.uniform(0, self.oversleep)


def departures(clock: SimulatedClock) -> Departures:
    return Departures(LIMIT, MARGIN, clock=clock, sleep=clock.sleep)


def send_all(clock, count, round_trip=0.001, stalls=None, slow_answers=None) -> tuple[list[float], list[float]]:
    """Slots and departure times of `count` sends one after another, each answered after
    `round_trip` (or slow_answers[i]); stalls[i]: the sender stops that long before send i."""
    stalls, slow_answers = stalls or {}, slow_answers or {}
    gate = departures(clock)
    slots = [clock.now + i / RATE for i in range(count)]

    async def run() -> list[float]:
        times = []
        for i, slot in enumerate(slots):
            clock.now += stalls.get(i, 0.0)
            departure = await gate.depart(slot)
            gate.answered(departure, at=departure.at + slow_answers.get(i, round_trip))
            times.append(departure.at)
        return times

    return slots, asyncio.run(run())


def subscribers(bot, count: int, first_id: int) -> list[TelegramUser]:
    """`count` subscribed members, M0, M1, ..., their Telegram ids from `first_id` on."""
    return TelegramUser.objects.bulk_create(
        TelegramUser(bot=bot, telegram_id=first_id + n, first_name=f"M{n}", is_subscribed=True) for n in range(count)
    )


def sending(bot, text: str = "Hi") -> Broadcast:
    """A broadcast being sent to every subscriber of `bot`, its deliveries made."""
    broadcast = Broadcast.objects.create(bot=bot, text=text, status=Broadcast.Status.SENDING)
    fan_out(broadcast)
    return broadcast


def most_in_one_second(times: list[float]) -> int:
    """Telegram's count: the most sends in any sliding one-second window."""
    return max(sum(1 for t in times[i:] if t < start + 1.0) for i, start in enumerate(times))


def test_a_sender_that_wakes_late_still_sends_at_the_rate():
    # Spacing each send 1/rate after the previous departure turned oversleeping into fewer
    # messages (4-8% on a busy machine); aiming every send at its own slot loses nothing.
    clock = SimulatedClock(oversleep=0.003)
    slots, times = send_all(clock, 600)

    assert times[-1] - times[0] < (len(slots) - 1) / RATE + 0.01
    assert max(t - s for s, t in zip(slots, times, strict=True)) < 0.005
    assert most_in_one_second(times) <= LIMIT


def test_a_stalled_sender_catches_up_but_never_sends_more_than_the_limit_in_a_second():
    clock = SimulatedClock(oversleep=0.001)
    slots, times = send_all(clock, 300, stalls={50: 0.4, 170: 0.25})

    assert most_in_one_second(times) <= LIMIT
    assert all(later - earlier >= 1.0 for earlier, later in zip(times, times[LIMIT:], strict=False))
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 1 / (CATCH_UP * RATE) - 1e-9, "catching up is no burst"
    # The sends due during the stall leave faster than the rate, as far as the window allows.
    lateness = [t - s for s, t in zip(slots, times, strict=True)]
    assert lateness[50] > 0.35
    assert lateness[75] < lateness[50] - 0.25
    # Stalls cost at most the longest of them, not their sum plus the oversleeps after them.
    assert times[-1] - slots[-1] < 0.4


def test_a_send_that_reached_telegram_late_holds_the_window_back_by_as_much():
    clock = SimulatedClock()
    _, times = send_all(clock, 100, round_trip=0.001, slow_answers={40: 0.031})

    # Send 40 may have arrived 30 ms after it left: send 70 waits a second and 30 ms after it.
    assert times[70] - times[40] >= 1.0 + 0.030
    assert times[69] - times[39] < 1.0 + 0.010
    assert most_in_one_second(times) <= LIMIT


def test_while_the_windows_oldest_send_is_unanswered_the_next_one_waits_for_its_answer():
    clock = SimulatedClock()
    gate = departures(clock)

    async def run() -> tuple[float, float]:
        for _ in range(LIMIT):
            gate.answered(await gate.depart(clock.now), at=clock.now + 0.001)
            clock.now += 1 / RATE
        slow = await gate.depart(clock.now)
        for i in range(1, LIMIT):
            gate.answered(await gate.depart(slow.at + i / RATE), at=clock.now + 0.001)
        answer_at = slow.at + 0.5

        async def answer_later(seconds: float) -> None:
            clock.now += seconds
            if slow.answered is None and clock.now >= answer_at:
                gate.answered(slow, at=answer_at)

        gate.sleep = answer_later
        closing = await gate.depart(slow.at + LIMIT / RATE)
        return slow.at, closing.at

    slow, closing = asyncio.run(run())
    # It may have reached Telegram up to 0.5 s - 1 ms (the fastest round trip) after leaving.
    assert closing - slow >= 1.0 + 0.499


def test_until_the_first_send_is_answered_nothing_else_leaves():
    clock = SimulatedClock()
    gate = departures(clock)

    async def run() -> float:
        first = await gate.depart(clock.now)

        async def answer_later(seconds: float) -> None:
            clock.now += seconds
            if first.answered is None and clock.now >= first.at + 0.2:
                gate.answered(first)

        gate.sleep = answer_later
        second = await gate.depart(first.at + 1 / (2 * RATE))
        return second.at - first.answered

    assert asyncio.run(run()) >= 0


def test_nothing_leaves_during_a_429_pause():
    clock = SimulatedClock()
    gate = departures(clock)

    async def run() -> list[float]:
        times = [(await gate.depart(clock.now)).at]
        gate.pause(2.0)
        paused_at = clock.now
        times += [(await gate.depart(clock.now)).at for _ in range(3)]
        return [t - paused_at for t in times[1:]]

    after_pause = asyncio.run(run())
    assert min(after_pause) >= 2.0


class RepliesMeanwhile(SimulatedClock):
    """The simulated clock, and replies of other processes that leave through the shared
    log at their moments while the sender sleeps; `due`: (when, reply) to try next."""

    def __init__(self, log: DatabaseDepartureLog, due: list[tuple[float, int]]):
        super().__init__()
        self.log, self.due, self.left = log, due, {}
        heapq.heapify(self.due)
        log.clock = self

    async def sleep(self, seconds: float) -> None:
        until = self.now + seconds
        while self.due and self.due[0][0] <= until:
            self.now, reply = heapq.heappop(self.due)
            limit, seconds = window(LIMIT, MARGIN)
            if wait := self.log.leave("bot:sim", "replies", limit, seconds):
                heapq.heappush(self.due, (self.now + wait, reply))
            else:
                self.log.arrived("bot:sim", wait.departure, 0.005)  # its answer
                self.left[reply] = self.now
        self.now = until


async def direct(func, *args):
    return func(*args)


def broadcast_with_replies(shared: bool) -> tuple[list[float], list[float], dict[int, float]]:
    """A broadcast sender on every slot of the bot's timeline but every fifth from 3 s on,
    which replies take: each reply leaves 15 ms after its slot (its handler's database work).
    Returns the reply slots, the broadcast's departures and the replies'."""
    slots = [1000.0 + i / RATE for i in range(450)]
    reply_slots = [at for i, at in enumerate(slots) if at >= 1003.0 and i % 5 == 0][:40]
    clock = RepliesMeanwhile(DatabaseDepartureLog(), [(at + 0.015, n) for n, at in enumerate(reply_slots)])
    log = clock.log if shared else None
    gate = Departures(LIMIT, MARGIN, clock=clock, sleep=clock.sleep, log=log, key="bot:sim", offload=direct)

    async def run() -> list[float]:
        times = []
        try:
            for slot in (at for at in slots if at not in reply_slots):
                departure = await gate.depart(slot)
                gate.answered(departure, at=departure.at + 0.001)
                times.append(departure.at)
        finally:
            connections.close_all()  # the event loop's own
        return times

    return reply_slots, asyncio.run(run()), clock.left


@pytest.fixture
def log_on_the_loop(transactional_db, monkeypatch):
    """The simulation calls the database log from its event loop (on a connection of its own)."""
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


def test_a_broadcast_and_replies_of_other_processes_together_stay_under_the_limit(log_on_the_loop):
    reply_slots, sent, replied = broadcast_with_replies(shared=True)

    assert len(replied) == len(reply_slots)
    assert most_in_one_second(sorted(sent + list(replied.values()))) <= LIMIT
    # Replies still go first: the sender gives up the places it held once it sees them.
    assert max(replied[n] - at for n, at in enumerate(reply_slots)) < 0.25


def test_without_the_shared_record_a_broadcast_and_late_replies_overshoot(log_on_the_loop):
    _, sent, replied = broadcast_with_replies(shared=False)

    assert most_in_one_second(sorted(sent + list(replied.values()))) > LIMIT


@pytest.fixture
def stalling_event_loop(monkeypatch):
    """The sender's event loop freezes for 0.3 s, twice, as a busy machine makes it."""
    send_all_for_real = BroadcastSender._send_all

    async def with_stalls(self):
        loop = asyncio.get_running_loop()
        for after in (1.0, 2.7):
            loop.call_later(after, time.sleep, 0.3)
        await send_all_for_real(self)

    monkeypatch.setattr(BroadcastSender, "_send_all", with_stalls)


@pytest.mark.filterwarnings("ignore:Please use 'Bot.send")
def test_a_late_sender_never_puts_more_than_the_limit_in_a_second_at_telegram(
    telegram_bot, fake_telegram, settings, stalling_event_loop
):
    settings.TELEGRAM_RATE_LIMIT, settings.TELEGRAM_RATE_MARGIN = LIMIT, MARGIN
    fake_telegram.enforce_limits(per_second=LIMIT)
    members = subscribers(telegram_bot, 150, first_id=5_000_000)
    broadcast = sending(telegram_bot, text="Hi #first_name")
    outcome = send_deliveries(broadcast.pk)

    assert outcome["sent"] == len(members) and outcome["rate_limited"] == 0
    assert fake_telegram.rate_limited_count == 0
    calls = fake_telegram.calls("sendMessage")
    assert len(calls) == len(members)
    arrivals = sorted(c.received_at for c in calls)
    assert most_in_one_second(arrivals) <= LIMIT
    # After each stall the sends that fell due left closer together than the rate, to catch up
    # (spacing each send 1/rate after the last one never did). How much time that wins back is
    # shown on the simulated clock above: here, on a real and possibly busy machine, any lateness
    # of its own only makes more sends catch up.
    catching_up = [b - a for a, b in itertools.pairwise(arrivals) if b - a < 0.8 / RATE]
    assert len(catching_up) >= 20, f"{len(catching_up)} sends caught up"

    # sent_at: when Telegram accepted that very message, not one time per recorded batch.
    answered = {c.chat_id: c.answered_at for c in calls}
    sent = list(Delivery.objects.filter(broadcast=broadcast).values_list("chat_id", "sent_at", "status"))
    assert {status for _, _, status in sent} == {Delivery.Status.SENT}
    assert len({sent_at for _, sent_at, _ in sent}) == len(members)
    for chat_id, sent_at, _ in sent:
        assert 0 <= sent_at.timestamp() - answered[chat_id] < 0.5


@pytest.mark.filterwarnings("ignore:Please use 'Bot.send")
def test_the_sender_walks_in_id_order_fanning_out_the_rest_and_recovering_a_dead_workers_rows(
    telegram_bot, fake_telegram, settings, monkeypatch
):
    """One sender sends the whole broadcast in id order, and makes the fan-out's next batch
    itself when it has sent the last one (start_broadcast's fan-out may lag behind); a row a
    dead worker left `sending` becomes unknown, not resent; a retry it left is sent, behind
    the walk."""
    settings.TELEGRAM_RATE_LIMIT = 100  # claims of 24: fewer than a batch
    monkeypatch.setattr("broadcasts.sending.FAN_OUT_BATCH", 40)
    subscribers(telegram_bot, 120, first_id=6_000_000)
    broadcast = Broadcast.objects.create(bot=telegram_bot, text="Hi", status=Broadcast.Status.SENDING)
    assert fan_out(broadcast) == 40 and broadcast.fan_out_after is not None
    first_batch = list(broadcast.deliveries.order_by("pk"))
    in_flight, retry = first_batch[5], first_batch[7]
    Delivery.objects.filter(pk=in_flight.pk).update(status=Delivery.Status.SENDING, claimed_by="gone:1:dead")
    Delivery.objects.filter(pk=retry.pk).update(status=Delivery.Status.RETRYING, attempts=1)

    outcome = send_deliveries(broadcast.pk)

    assert outcome["sent"] == 119
    assert Delivery.objects.get(pk=in_flight.pk).status == Delivery.Status.UNKNOWN
    assert Delivery.objects.get(pk=retry.pk).status == Delivery.Status.SENT
    arrivals = [c.chat_id for c in sorted(fake_telegram.calls("sendMessage"), key=lambda c: c.received_at)]
    everyone_else = [d.chat_id for d in broadcast.deliveries.exclude(pk=in_flight.pk).order_by("pk")]
    assert sorted(arrivals) == sorted(everyone_else), "each exactly once"
    assert broadcast.deliveries.count() == 120
    # The batches in the order they were made (sends a few milliseconds apart may reach the
    # fake in either order on a busy machine: whole batches are compared).
    assert set(arrivals[:30]) <= {d.chat_id for d in first_batch}
    assert set(arrivals[-30:]) <= set(everyone_else[-40:])
    broadcast.refresh_from_db()
    assert (broadcast.status, broadcast.fan_out_after) == (Broadcast.Status.DONE, None)


@pytest.mark.filterwarnings("ignore:Please use 'Bot.send")
def test_a_delivery_put_back_behind_the_walk_is_sent_by_the_same_sender(telegram_bot, fake_telegram, settings):
    """An operator's retry (or a 429) puts a delivery the walk has passed back to pending:
    the claims look back for it once the walk finds too few ahead."""
    settings.TELEGRAM_RATE_LIMIT = 100
    subscribers(telegram_bot, 60, first_id=6_500_000)
    broadcast = sending(telegram_bot)
    sender = BroadcastSender(broadcast)
    first = [send.delivery.pk for send in sender._claim(20)]
    Delivery.objects.filter(pk=first[3]).update(status=Delivery.Status.PENDING, claimed_by="", claimed_at=None)

    claimed = [send.delivery.pk for send in sender._claim(50)]

    rest = list(broadcast.deliveries.order_by("pk").values_list("pk", flat=True)[20:])
    assert claimed == [*rest, first[3]]


@pytest.mark.filterwarnings("ignore:Please use 'Bot.send")
def test_a_429_answered_after_the_last_claim_is_sent_after_the_pause(telegram_bot, fake_telegram, settings):
    """The delivery goes back to pending once everything has been claimed: the sender must
    claim it again, not finish with it pending (the broadcast would never be done)."""
    settings.TELEGRAM_RATE_LIMIT = 100
    members = subscribers(telegram_bot, 20, first_id=7_000_000)
    last = members[-1].telegram_id
    fake_telegram.fail("rate_limit", method="sendMessage", chat_id=last, retry_after=1, times=1)
    broadcast = sending(telegram_bot)

    outcome = send_deliveries(broadcast.pk)

    assert outcome == {"sent": 20, "failed": 0, "skipped": 0, "rate_limited": 1}
    attempts = [c for c in fake_telegram.calls("sendMessage") if c.chat_id == last]
    assert [c.status for c in attempts] == [429, 200]
    assert attempts[1].received_at >= attempts[0].answered_at + 1.0
    broadcast.refresh_from_db()
    assert broadcast.status == Broadcast.Status.DONE


@pytest.mark.filterwarnings("ignore:Please use 'Bot.send")
def test_a_member_who_blocked_the_bot_is_failed_as_blocked_and_never_retried(telegram_bot, fake_telegram):
    members = subscribers(telegram_bot, 3, first_id=8_000_000)
    blocked = members[1]
    fake_telegram.fail("blocked", chat_id=blocked.telegram_id)
    broadcast = sending(telegram_bot)

    outcome = send_deliveries(broadcast.pk)

    assert (outcome["sent"], outcome["failed"]) == (2, 1)
    failed = Delivery.objects.get(member=blocked)
    assert (failed.status, failed.error_class) == (Delivery.Status.FAILED, Delivery.ErrorClass.BLOCKED)
    assert failed.error.startswith("The member blocked the bot (") and "bot was blocked by the user" in failed.error
    assert TelegramUser.objects.get(pk=blocked.pk).is_blocked
    # Unblocked since (say, a /start): still not retried, the delivery says Telegram refused it.
    TelegramUser.objects.filter(pk=blocked.pk).update(is_blocked=False)
    assert broadcast.retry_failed() == 0


def test_start_broadcast_enqueues_one_sender_after_the_first_batch_and_fans_out_the_rest_in_runs(
    telegram_bot, settings, monkeypatch
):
    """The sender starts on a small first batch; the fan-out goes on in batches of their own, and
    when the job's time is up it asks to run again at once. A run again (this one, a resume)
    carries on, without a second sender."""
    monkeypatch.setattr("broadcasts.sending.FAN_OUT_BATCH", 30)
    monkeypatch.setattr("broadcasts.tasks.FIRST_BATCH", 10)
    settings.QUEUES = {**settings.QUEUES, "telegram": {**settings.QUEUES["telegram"], "timeout": 0}}
    subscribers(telegram_bot, 95, first_id=9_500_000)
    broadcast = Broadcast.objects.create(bot=telegram_bot, text="Hi")

    with pytest.raises(Deferred) as deferred:
        start_broadcast(broadcast.pk)

    assert deferred.value.retry_after == 0
    broadcast.refresh_from_db()
    assert broadcast.status == Broadcast.Status.SENDING and broadcast.deliveries.count() == 40
    senders = JobRecord.objects.of_kinds(send_deliveries)
    assert list(senders.values_list("queue", "args")) == [("broadcasts", [broadcast.pk])]
    assert not finish_if_complete(broadcast)

    with pytest.raises(Deferred):
        start_broadcast(broadcast.pk)
    assert broadcast.deliveries.count() == 70
    assert start_broadcast(broadcast.pk) == {"batches": 1}

    assert broadcast.deliveries.count() == 95 and senders.count() == 1
    assert sorted(broadcast.deliveries.values_list("member_id", flat=True)) == sorted(
        TelegramUser.objects.values_list("pk", flat=True)
    )
    broadcast.refresh_from_db()
    assert broadcast.fan_out_after is None


@pytest.mark.filterwarnings("ignore:Please use 'Bot.send")
def test_a_delivery_whose_member_was_deleted_during_the_fan_out_is_skipped_and_the_broadcast_finishes(
    telegram_bot, fake_telegram
):
    """Deliveries have no foreign-key constraints in the database (a million checks at COMMIT):
    a member deleted while the fan-out read them leaves a delivery without its member, which
    the sender skips instead of holding it claimed for ever."""
    members = subscribers(telegram_bot, 5, first_id=8_500_000)
    broadcast = sending(telegram_bot)
    gone = members[2]
    TelegramUser.objects.filter(pk=gone.pk)._raw_delete(using="default")  # no cascade: as in the race

    outcome = send_deliveries(broadcast.pk)

    assert (outcome["sent"], outcome["skipped"]) == (4, 1)
    assert broadcast.deliveries.get(member_id=gone.pk).status == Delivery.Status.SKIPPED
    assert sorted(c.params["chat_id"] for c in fake_telegram.calls("sendMessage")) == sorted(
        m.telegram_id for m in members if m.pk != gone.pk
    )
    broadcast.refresh_from_db()
    assert broadcast.status == Broadcast.Status.DONE


@pytest.mark.filterwarnings("ignore:Please use 'Bot.send")
def test_each_member_gets_their_own_names_and_pledges_and_members_who_left_since_the_fan_out_nothing(
    telegram_bot, fake_telegram
):
    """The sender reads each claimed delivery's member and pledges in bulk: every text is its
    own member's, pledges summed in the order they were made (the first one's currency)."""
    members = subscribers(telegram_bot, 4, first_id=8_600_000)
    members[1].last_name, members[1].first_name, members[1].username = "Lee", "", "lee"
    members[1].save()
    later = timezone.now()
    for member, amount, currency, made in (
        (members[0], 100, "EUR", later),
        (members[0], 50, "USD", later - timedelta(days=1)),
        (members[2], 7, "GBP", later),
    ):
        Pledge.objects.create(
            bot=telegram_bot,
            member=member,
            telegram_id=member.telegram_id,
            amount=amount,
            currency=currency,
            created_at=made,
        )
    broadcast = Broadcast.objects.create(
        bot=telegram_bot, text="Dear #first_name (#username): #pledge", status=Broadcast.Status.SENDING
    )
    fan_out(broadcast)
    TelegramUser.objects.filter(pk=members[3].pk).update(is_blocked=True)

    outcome = send_deliveries(broadcast.pk)

    assert (outcome["sent"], outcome["skipped"]) == (3, 1)
    texts = {c.params["chat_id"]: c.params["text"] for c in fake_telegram.calls("sendMessage")}
    assert texts == {
        members[0].telegram_id: "Dear M0 (): 150 USD",
        members[1].telegram_id: "Dear Lee (@lee): -",
        members[2].telegram_id: "Dear M2 (): 7 GBP",
    }
    assert broadcast.deliveries.get(member=members[3]).status == Delivery.Status.SKIPPED


@pytest.mark.filterwarnings("ignore:Please use 'Bot.send")
def test_a_bot_with_a_rate_of_its_own_is_sent_to_at_that_rate(telegram_bot, fake_telegram, settings):
    """Bot.rate_limit, not TELEGRAM_RATE_LIMIT, paces the bot's broadcast: Telegram (the fake)
    allows this bot 20 a second, the others 30."""
    settings.TELEGRAM_RATE_LIMIT, settings.TELEGRAM_RATE_MARGIN = LIMIT, MARGIN
    telegram_bot.rate_limit = 20
    telegram_bot.save()
    fake_telegram.enforce_limits(per_second=LIMIT, per_bot={telegram_bot.token: 20})
    members = subscribers(telegram_bot, 70, first_id=8_000_000)
    broadcast = sending(telegram_bot)

    outcome = send_deliveries(broadcast.pk)

    assert outcome["sent"] == len(members) and outcome["rate_limited"] == 0
    assert fake_telegram.rate_limited_count == 0
    arrivals = sorted(c.received_at for c in fake_telegram.calls("sendMessage"))
    assert most_in_one_second(arrivals) <= 20


@pytest.mark.filterwarnings("ignore:Please use 'Bot.send")
def test_a_sender_that_stops_early_leaves_what_it_claimed_ahead_to_the_next_one(
    telegram_bot, fake_telegram, settings, monkeypatch
):
    """Deliveries are claimed a second ahead: a sender stopped by a flood wait longer than its
    job frees those it never sent, so that the next sender need not wait for the claim to go stale."""
    settings.TELEGRAM_RATE_LIMIT = 30
    monkeypatch.setattr("broadcasts.sending.time_left", lambda: 20.0)
    members = subscribers(telegram_bot, 80, first_id=9_000_000)
    fake_telegram.fail("rate_limit", method="sendMessage", chat_id=members[10].telegram_id, retry_after=60, times=1)
    broadcast = sending(telegram_bot)

    with pytest.raises(Deferred):
        send_deliveries(broadcast.pk)

    pending = broadcast.deliveries.filter(status=Delivery.Status.PENDING)
    assert pending.count() >= len(members) - 30
    assert not pending.exclude(claimed_by="").exists()
    assert not broadcast.deliveries.filter(status=Delivery.Status.SENDING).exists()


@pytest.mark.filterwarnings("ignore:Please use 'Bot.send")
def test_a_sender_behind_its_slots_marks_no_more_sending_until_it_catches_up(telegram_bot, fake_telegram, settings):
    """On a starved machine sends leave later than their slots. Were slots still taken at the
    rate, rows marked `sending` and waiting would pile up (every one `unknown` after a crash:
    158 of 600 in a kill test at load 10); they stay within two grants."""
    settings.TELEGRAM_RATE_LIMIT = 100
    subscribers(telegram_bot, 400, first_id=7_500_000)
    broadcast = sending(telegram_bot)
    sender = BroadcastSender(broadcast, until=time.monotonic() + 2.0)
    waiting: list[int] = []

    async def never_leaves(slot: float):
        waiting.append(len(sender.undeparted))
        await asyncio.Event().wait()

    sender.departures.depart = never_leaves
    sender.run()

    per_grant = int(sender.rate * 0.25)
    assert max(waiting) <= 2 * per_grant, f"{max(waiting)} marked sending and waiting to leave"
    assert not broadcast.deliveries.filter(status=Delivery.Status.SENDING).exists(), "put back when it stopped"
    assert not fake_telegram.calls("sendMessage")
