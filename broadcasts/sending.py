"""Sending a broadcast: fan-out into deliveries, in batches, and one sender per broadcast
at the bot's rate.

The fan-out makes the deliveries FAN_OUT_BATCH members at a time, in member id order, each
batch in a transaction with the broadcast's cursor (fan_out_after): the sender starts on the
first batch while the rest are made, and a broadcast is done only once its fan-out is complete.

Each delivery goes pending -> sending -> sent (with its message id), failed, or back to
pending for a retry. A sender claims pending rows with one conditional UPDATE of
`claimed_by` (who: host:pid:sender) and `claimed_at`, then marks them `sending` just
before their group of sends goes out; the claim is cleared when the row leaves `sending`.
One sender sends for a bot at a time (broadcasts.tasks.send_deliveries holds the bot's lock),
so `sending` rows another claimer holds when a sender starts are a dead worker's, and they
become `unknown`: they may have reached the member, so they are never sent again
automatically. So is a send that left and got no answer. A claim the dead worker made on
rows it never marked `sending` is freed when the next sender starts.

No wait outlives a job: when Telegram's flood control, an outage (queueing.circuit) or a
retry's backoff would keep a sender past its job's timeout, it puts its unsent deliveries
back to pending and its job asks to run again when the wait is over. So does a broadcast's
send window closing (broadcasts.window): each send checks it as it leaves, and the job asks
to run again at the window's next opening."""

import asyncio
import contextlib
import heapq
import logging
import math
import time
import uuid
import warnings
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import NamedTuple

import telegram
from django.conf import settings
from django.db import close_old_connections, connection, connections, transaction
from django.db.models import Case, F, Value, When
from django.db.models.fields.files import FieldFile
from django.utils import timezone
from telegram.warnings import PTBUserWarning

from bots import telegram_api
from bots.models import TelegramUser
from bots.transport import JsonBody, NoAnswer, Unreachable
from broadcasts.audiences import recipients
from broadcasts.markup import Keyboards
from broadcasts.models import Broadcast, Delivery, Pledge
from broadcasts.personalize import needs_pledge, render
from broadcasts.variants import Split, Version, Versions
from queueing import circuit, redaction
from queueing.departures import MOST_HELD, Answered, DepartureLog, get_departure_log, window
from queueing.errors import DEFERRED, MAYBE_DONE, PERMANENT, RATE_LIMITED, RETRIABLE, classify
from queueing.heartbeat import machines_gone
from queueing.queues import current_worker, get_queue
from queueing.ratelimit import Grant, get_limiter
from queueing.runner import time_left
from queueing.wording import duration

logger = logging.getLogger(__name__)
# sendPhoto/sendDocument uploads through do_api_request on purpose (see BroadcastSender._send); PTB would say so.
warnings.filterwarnings("ignore", message="Please use 'Bot.send", category=PTBUserWarning)

SMALL_BROADCAST = 100
# Recipients per fan-out transaction; the first is small, so sending starts at once.
FAN_OUT_BATCH = 20_000
FIRST_BATCH = 1000
# A sender holds at most this many deliveries claimed and unanswered.
MOST_IN_FLIGHT = 1000
# A sender stops this long before its job's timeout, with time to record what it sent.
DEADLINE_MARGIN = 3.0
# A wait for slots longer than this is Telegram's flood control (a 429 pause), not replies.
FLOOD_WAIT = 1.0
TOKEN_REJECTED = "Telegram rejected the bot's token: correct it in the bot's settings, then resume."
# Claim only send slots that start this soon, so replies are never queued behind much.
SLOT_HORIZON = 0.25
# A sender that fell behind its slots catches up at most this many times faster than the rate.
CATCH_UP = 1.5
# Deliveries are claimed and rendered this many seconds of sends ahead, in one round of queries,
# and marked `sending` grant by grant: at 30/s a round of claim queries per grant (4 sends)
# cost more CPU than the sends, and ten bots sending at once ran out of it.
CLAIM_AHEAD = 1.0
# A sender behind its slots looks again this often whether it has caught up.
BEHIND_LOOK_AGAIN = 0.05
# Whether the broadcast was paused or cancelled, its send window closed or Telegram found
# unreachable by another process is asked this often, not every round of claims (five a
# second, and two queries each time).
STOP_CHECK = 0.5
UNFINISHED = (Delivery.Status.PENDING, Delivery.Status.SENDING, Delivery.Status.RETRYING)


def fan_out(broadcast: Broadcast, batch: int | None = None) -> int:
    """The deliveries of the next `batch` (FAN_OUT_BATCH) recipients after broadcast.fan_out_after
    (member ids, in order), their arm, language and whether they are held for an A/B winner
    (broadcasts.variants.Split, a hash of each member's id: batches do not change it) included;
    moves fan_out_after to the last of them, or to None once every recipient has one. One
    INSERT ... SELECT per batch: no query per member. The caller holds the broadcast's row
    (select_for_update) when another may fan it out at the same time; the deliveries and the
    cursor move in one transaction, and a member who has a delivery already is left out."""
    split = Split(broadcast)
    sampled = split.in_sample("pk")
    # Once an A/B winner is chosen, the members outside the sample get it at once.
    rest = Delivery.Status.PENDING if broadcast.ab_winner else Delivery.Status.HELD
    size = batch or FAN_OUT_BATCH
    after = broadcast.fan_out_after or 0
    members = recipients(broadcast).filter(pk__gt=after).order_by("pk")
    last = next(iter(members.values_list("pk", flat=True)[size - 1 : size]), None)
    if last is not None:
        members = members.filter(pk__lte=last)
    members = members.annotate(
        ident=F("pk"),
        chat=F("telegram_id"),
        state=Case(When(sampled, then=Value(Delivery.Status.PENDING)), default=Value(rest)),
        cohort=Case(When(sampled, then=split.arm_of("pk")), default=Value(broadcast.ab_winner)),
        lang=split.language_of(),
    ).values("ident", "chat", "state", "cohort", "lang")
    select_sql, params = members.query.sql_with_params()
    table = Delivery._meta.db_table
    with transaction.atomic(), connection.cursor() as cursor:
        # WHERE true: SQLite would read ON CONFLICT as a join's ON without it.
        cursor.execute(
            f"INSERT INTO {table} (broadcast_id, member_id, chat_id, status, arm, language, attempts, error, "
            f"error_class) SELECT %s, sub.ident, sub.chat, sub.state, sub.cohort, sub.lang, 0, '', '' "
            f"FROM ({select_sql}) sub WHERE true ON CONFLICT (broadcast_id, member_id) DO NOTHING",
            [broadcast.pk, *params],
        )
        created = cursor.rowcount
        broadcast.fan_out_after = last
        Broadcast.objects.filter(pk=broadcast.pk).update(fan_out_after=last)
    return created


def fan_out_more(broadcast_id: int) -> bool:
    """One more batch of a sending or paused broadcast's fan-out, in a transaction of its
    own, if it is unfinished: whether more remain after it (False once the fan-out is
    complete, or the broadcast cancelled or over)."""
    with transaction.atomic():
        broadcast = Broadcast.objects.select_for_update().get(pk=broadcast_id)
        fanning_out = broadcast.status in (Broadcast.Status.SENDING, Broadcast.Status.PAUSED)
        if not fanning_out or broadcast.fan_out_after is None:
            return False
        fan_out(broadcast)
        return broadcast.fan_out_after is not None


def finish_if_complete(broadcast: Broadcast) -> bool:
    """sending -> done once the fan-out is complete and every delivery is final."""
    fanned_out = Broadcast.objects.filter(pk=broadcast.pk, fan_out_after__isnull=True)
    if not fanned_out.exists() or broadcast.deliveries.filter(status__in=(*UNFINISHED, Delivery.Status.HELD)).exists():
        return False
    return bool(
        fanned_out.filter(status=Broadcast.Status.SENDING).update(
            status=Broadcast.Status.DONE, finished_at=timezone.now()
        )
    )


@dataclass(order=True)
class _Retry:
    due: float
    delivery_id: int = field(compare=False)


class Outcome(NamedTuple):
    """How one send ended, recorded in bulk. `attempt` is 0 when it was not a try (a 429,
    an outage, or never sent at all)."""

    delivery_id: int
    status: str
    error: str = ""
    error_class: str = ""
    message_id: int | None = None
    sent_at: datetime | None = None
    attempt: int = 1


class Claimed(NamedTuple):
    """What sending a claimed delivery needs of its row (read as values: a model instance,
    its member and a prefetch per member cost more CPU than its send)."""

    pk: int
    chat_id: int
    attempts: int
    arm: str
    language: str


class Send(NamedTuple):
    """A claimed delivery and the text rendered for its member."""

    delivery: Claimed
    text: str


@dataclass(frozen=True)
class Deferral:
    """The sender stopped early: its job should run again in `seconds`."""

    seconds: float
    reason: str


@dataclass
class SendResult:
    sent: int = 0
    failed: int = 0
    skipped: int = 0
    rate_limited: int = 0

    def as_dict(self) -> dict[str, int]:
        return self.__dict__.copy()


@dataclass(slots=True)
class Departure:
    at: float
    answered: float | None = None  # when Telegram's answer (or an error) came back
    shared: str = ""  # its name in the shared log, when recorded there as it left


class Departures:
    """When each send of one sender may leave: at its slot, or as soon after as Telegram's
    sliding window allows.

    Telegram counts a bot's messages in sliding one-second windows. The limiter's slots are
    1/rate apart, rate = limit * (1 - margin). A send that wakes late leaves late, but later
    sends still aim at their own slots, so a late sender catches up instead of pushing every
    later send back (spacing each send 1/rate after the previous departure lost 4-8% to
    event-loop wake-ups a millisecond or two late). Catching up obeys, on actual departures:

    - any `limit` consecutive departures span at least one second plus WINDOW_SLACK of the
      margin (1.25 ms at 30/s and 0.5%; queueing.departures.window): never more than `limit`
      in one second;
    - plus however late the window's oldest send may have reached Telegram: its round trip
      beyond the fastest one seen (capped at MAX_DELAY; one still unanswered counts as
      answered now). A busy machine or network holds a request back for 10-20 ms now and
      then: the window's first message then arrives late, and the message that closes the
      window on time would arrive within the same second. Measured against the fake, a
      message never reached it later than its round trip beyond the fastest predicted;
    - consecutive departures at least 1 / (CATCH_UP * rate) apart: catching up is no burst;
    - nothing during a 429 pause, and nothing else until the first send is answered;
    - with a shared `log` (queueing.departures), the bot's other senders count too (replies,
      another broadcast's sender in another process). Every SYNC seconds this sender records its
      departures since the last batch, in the background, which says when another sender
      last sent, and holds `places` in the shared window for the sends it makes until the
      next batch: a reply that checks the window counts them before they are recorded. A
      send waits for a batch only when no place is left or they are about to lapse.
      While another sender sent or waited within the last SHARED seconds, each send instead
      checks the shared window and records itself there in one step (see the module docstring
      of queueing.departures). Either way a send counts there as late as its answer came
      back (until then as late as it could), as it may have reached Telegram that late.
      Calls of the log run in a thread of their own: the event loop never waits for Redis
      or the database. Paid broadcasts have a key of their own, which no reply shares, and
      up to 1000 sends a second: they keep to their own record only.

    `clock` and `sleep` are the event loop's, `offload(func)` runs a blocking call of the log
    (by default in a thread of its own); tests pass their own."""

    MAX_DELAY = 1.0
    POLL = 0.002  # while the window's oldest send is still unanswered
    SYNC = 0.1
    SHARED = 2.0

    def __init__(
        self,
        limit: float,
        margin: float,
        clock=time.monotonic,
        sleep=asyncio.sleep,
        log: DepartureLog | None = None,
        key: str = "",
        offload=None,
    ):
        self.rate = limit * (1 - margin)
        self.burst, self.window = window(limit, margin)
        self.min_gap = 1 / (CATCH_UP * self.rate)
        self.recent: deque[Departure] = deque(maxlen=self.burst)
        self.fastest = math.inf  # the shortest round trip seen
        self.paused_until = 0.0
        self.clock, self.sleep = clock, sleep
        self.lock = asyncio.Lock()
        self.log, self.key, self.sender = log, key, f"broadcast:{uuid.uuid4().hex}"
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="departures") if log else None
        self.offload = offload or self._in_thread
        self.places = min(MOST_HELD, math.ceil(CATCH_UP * self.rate * self.SYNC) + 1)
        self.unrecorded: list[Departure] = []  # own departures not yet in the log
        self.synced_at = -math.inf
        self.reserved = 0  # places held at the last sync
        self.others_at = -math.inf  # when another sender last sent, as the log last said
        self.sharing = False
        self.asked_at = 0.0  # when the last check of the shared window began
        self.recorded = ""  # the name the shared log gave the departure it last recorded
        self.answers: list[Answered] = []  # of departures `leave` recorded, told with the next check
        self.syncing: asyncio.Task | None = None  # a batch being recorded in the background
        self.recording = 0  # departures in that batch
        self.log_down = False

    def earliest(self, now: float) -> tuple[float, bool]:
        """The earliest moment the next send may leave, slots aside, and whether that may
        still move (an answer it waits for has not come yet)."""
        earliest, moving = self.paused_until, False
        if not self.recent:
            return earliest, moving
        fastest = self.fastest
        if math.isinf(fastest):
            # Until Telegram has answered once, one send at a time: a 429 (or a revoked token)
            # is learnt from one message, not from everything sent while the answer was on
            # its way back. The first send also opens the connection.
            earliest, moving, fastest = max(earliest, self.recent[0].at + self.MAX_DELAY), True, 0.0
        earliest = max(earliest, self.recent[-1].at + self.min_gap)
        if len(self.recent) == self.burst:
            oldest = self.recent[0]
            late = self.late(oldest, now, fastest)
            moving = moving or (oldest.answered is None and late < self.MAX_DELAY)
            earliest = max(earliest, oldest.at + self.window + late)
        return earliest, moving

    def late(self, departure: Departure, now: float, fastest: float) -> float:
        """How much later than it left a send may have reached Telegram: its round trip beyond
        the fastest one (one still unanswered counts as answered now)."""
        round_trip = (now if departure.answered is None else departure.answered) - departure.at
        return min(self.MAX_DELAY, max(0.0, round_trip - fastest))

    def pause(self, seconds: float) -> None:
        self.paused_until = max(self.paused_until, self.clock() + seconds)

    async def depart(self, slot: float) -> Departure:
        """Wait for `slot` (a `clock` time) and for the rules above. Call `answered` with the
        result when Telegram's answer comes back."""
        if (wait := slot - self.clock()) > 0:
            await self.sleep(wait)
        async with self.lock:  # FIFO: sends leave in the order of their slots
            while True:
                now = self.clock()
                earliest, moving = self.earliest(now)
                if earliest <= now:
                    if not (wait := await self._shared_wait()):
                        break
                    await self.sleep(wait)
                    continue
                await self.sleep(min(earliest - now, self.POLL) if moving else earliest - now)
            departure = Departure(self.asked_at, shared=self.recorded) if self.sharing else Departure(self.clock())
            self.recent.append(departure)
            if self.log and not self.sharing:
                self.unrecorded.append(departure)
            return departure

    async def _shared_wait(self) -> float:
        """0 if this send may leave (recorded in the shared log, or to be recorded with a
        batch); else how long until the shared window has room for it."""
        if self.log is None:
            return 0.0
        now = self.clock()
        in_flight = self.syncing is not None and not self.syncing.done()
        out_of_places = self.recording + len(self.unrecorded) >= self.reserved
        if not self.sharing and (out_of_places or now - self.synced_at >= 1.5 * self.SYNC):
            # Places are held until 2 * SYNC after a batch: none left, or about to lapse.
            if in_flight:
                await self.syncing
            await self._sync()
        elif now - self.synced_at >= self.SYNC and not in_flight:
            self.syncing = asyncio.create_task(self._sync())
        if not self.sharing:
            return 0.0
        # The log records the departure before it answers: the send counts from here.
        self.asked_at = self.clock()
        try:
            answers, self.answers = self.answers, []
            room = await self.offload(self.log.leave, self.key, self.sender, self.burst, self.window, answers)
        except Exception:
            self._unavailable()
            self.recorded = ""
            return 0.0
        self.log_down = False
        self.recorded = room.departure
        return room

    async def _sync(self) -> None:
        """Record this sender's departures since the last batch, hold places for those until
        the next one unless others send (each send then records itself), and learn when
        another sender last sent. Sends may leave meanwhile, on the places held before."""
        started = self.clock()
        batch, self.unrecorded = self.unrecorded, []
        reserve = 0 if self.sharing else self.places
        self.recording = len(batch)

        def record() -> float | None:
            return self.log.record(self.key, self.sender, self._ages(batch), reserve, 2 * self.SYNC)

        try:
            others_age = await self.offload(record)
            self.log_down = False
        except Exception:
            # Sending goes on by this sender's own record; a 429 that follows pauses everyone.
            self._unavailable()
            others_age = None
        finally:
            self.recording = 0
        self.synced_at, self.reserved = started, reserve
        if others_age is not None:
            self.others_at = max(self.others_at, self.clock() - others_age)
        self.sharing = self.clock() - self.others_at < self.SHARED
        if self.sharing and reserve:
            await self._sync()  # give the places back at once: a reply may be waiting for them

    def _unavailable(self) -> None:
        """Once per outage, not once per send."""
        if not self.log_down:
            logger.warning("The shared record of departures is unavailable", exc_info=True)
        self.log_down = True

    def _ages(self, batch: list[Departure]) -> list[float]:
        """How long ago each departure left, counted as late as its answer came back (one
        still unanswered as answered now), as it may have reached Telegram that late."""
        now = self.clock()
        return [now - d.at - self.late(d, now, 0.0) for d in batch]

    async def _in_thread(self, func, *args):
        return await asyncio.get_running_loop().run_in_executor(self.thread, func, *args)

    async def close(self) -> None:
        """Record the last departures and give the places held back; the log's thread and
        its database connection close."""
        if self.log is None:
            return
        if self.syncing:
            await self.syncing
        self.sharing = True  # no places held from now on
        await self._sync()
        await self._in_thread(connections.close_all)
        self.thread.shutdown()

    def answered(self, departure: Departure, at: float | None = None) -> None:
        departure.answered = self.clock() if at is None else at
        self.fastest = min(self.fastest, departure.answered - departure.at)
        if departure.shared:
            # Told with the next send's check: until then it counts as late as it could be.
            self.answers.append((departure.shared, departure.answered - departure.at))


class BroadcastSender:
    """Sends a broadcast's deliveries in id order, as fast as the bot's rate lets.

    1. Claim send slots from the shared limiter, at most SLOT_HORIZON ahead.
    2. Mark as many pending deliveries `sending` and schedule each at its slot (see Departures),
       from those claimed and rendered a second ahead (CLAIM_AHEAD): the claims walk on from
       the last one claimed (a keyset, so a million sent rows are never read again), and look
       back from the start only when the walk finds too few (a delivery a 429 put back, a
       retry now due, one an operator sends again).
    3. As answers come back, record them in bulk; 429 pauses the bot's slots for
       everyone and puts the delivery back; network errors retry it after a backoff.
    4. When nothing is left to claim while the fan-out goes on (broadcasts.tasks.start_broadcast
       fans out in batches of its own), fan out the next batch here.
    5. Stop when nothing is pending, waiting for a retry, or in flight and the fan-out is
       complete; when the broadcast is paused or cancelled; or at `until` (a
       time.monotonic()), when the job carries on in a new run (`carry_on`)."""

    def __init__(self, broadcast: Broadcast, until: float = math.inf):
        self.broadcast = broadcast
        self.claimer = f"{current_worker()}:{uuid.uuid4().hex[:8]}"
        self.after = 0  # the walk's place: the last delivery id claimed
        paid = broadcast.allow_paid_broadcast
        limit = broadcast.bot.send_limit(paid)
        self.rate_key = f"bot:{broadcast.bot_id}" + (":paid" if paid else "")
        log = None if paid else get_departure_log()
        self.departures = Departures(limit, settings.TELEGRAM_RATE_MARGIN, log=log, key=self.rate_key)
        self.rate = self.departures.rate
        self.limiter = get_limiter()
        self.result = SendResult()
        self.parse_mode = broadcast.effective_parse_mode or None
        self.versions = Versions(broadcast)
        self.keyboards = Keyboards(self.versions)
        self.needs_pledges = any(needs_pledge(version.text) for version in self.versions)
        self.file_ids: dict[str, str] = {}  # attachment -> Telegram's file_id, once uploaded
        self.uploading = asyncio.Lock()
        self.retries: list[_Retry] = []
        self.policy = get_queue("broadcasts")  # each delivery's attempts and backoff
        self.finished: list[Outcome] = []
        self.claimed: deque[Send] = deque()  # claimed and rendered ahead, not yet `sending`
        self.db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="broadcast-db")
        self.unfinished = 0  # sends scheduled and not answered yet
        self.room = asyncio.Event()
        # Claimed (marked `sending`) and not yet on their way: delivery id -> its send task.
        self.undeparted: dict[int, asyncio.Task] = {}
        self.left = asyncio.Event()  # set as each of them leaves
        self.until = until
        self.deadline = min(until, time.monotonic() + time_left() - DEADLINE_MARGIN)
        redaction.redact("")  # learns the secrets here: error texts are redacted on the event loop
        self.deferral: Deferral | None = None
        self.carry_on = False  # stopped at `until` with more to send: the job runs again at once
        self.outage: Exception | None = None  # Telegram unreachable, or the token rejected
        self.circuit_key = telegram_api.circuit_key(broadcast.bot_id)
        self.cancelled = False
        self.stall_cleared = False
        self.window = broadcast.send_window

    @property
    def deliveries(self):
        return Delivery.objects.filter(broadcast=self.broadcast)

    def _recover(self) -> None:
        """Before sending: rows another claimer holds are a dead worker's (see the module
        docstring): those it marked `sending` may have left, those it only claimed ahead are
        free at once; and retries left by it are due."""
        self.deliveries.left_by_others(self.claimer).update(
            status=Delivery.Status.UNKNOWN,
            error="The worker sending this stopped before Telegram answered.",
            claimed_by="",
            claimed_at=None,
        )
        self.deliveries.pending().exclude(claimed_by="").update(claimed_by="", claimed_at=None)
        self.deliveries.filter(status=Delivery.Status.RETRYING).update(status=Delivery.Status.PENDING)

    def run(self) -> SendResult:
        self._recover()
        try:
            telegram_api.run(self._send_all())
        except BaseException:
            # The job's timeout or a stop signal, raised wherever the loop was: record what
            # Telegram answered, and what never left goes back to pending.
            self._record(self.finished)
            Delivery.objects.filter(pk__in=list(self.undeparted), status=Delivery.Status.SENDING).update(
                status=Delivery.Status.PENDING, claimed_by="", claimed_at=None
            )
            raise
        finally:
            self._release_claimed()
            telegram_api.run(self.departures.close())
            self.db.submit(close_old_connections).result()
            self.db.shutdown()
        return self.result

    async def _in_db(self, func, *args):
        return await asyncio.get_running_loop().run_in_executor(self.db, func, *args)

    async def _send_all(self) -> None:
        try:
            api = await telegram_api.api_for_async(self.broadcast.bot)  # asks getMe the first time
        except (Unreachable, NoAnswer, telegram.error.InvalidToken) as exc:
            self.outage = exc if not isinstance(exc, NoAnswer) else Unreachable(str(exc))
            self.deferral = await self._in_db(self._trip)
            return
        tasks: set[asyncio.Task] = set()
        exhausted = False
        next_ask = next_stop_check = 0.0
        while True:
            # Bookkeeping first, in one call of the database thread: it runs while the sends just
            # scheduled wait for their slots.
            check_stop = self.outage is None and time.monotonic() >= next_stop_check
            if check_stop:
                next_stop_check = time.monotonic() + STOP_CHECK
            done, self.finished = self.finished, []
            stopped, retries_due = await self._in_db(self._bookkeeping, done, check_stop, exhausted)
            if self.outage is not None:
                self.deferral = await self._in_db(self._trip)
                break
            if stopped:
                break
            exhausted = exhausted and not retries_due
            tasks = {t for t in tasks if not t.done()}
            if deferral := self._wait_outlives_job(exhausted and not tasks):
                self.deferral = deferral
                break
            if self.carry_on:
                break
            if exhausted and not self.retries and not tasks:
                # Every answer recorded: a 429 answered after the last claim put its delivery
                # back to pending, to be claimed again.
                await self._flush()
                if not await self._in_db(self._claimable_left):
                    break
                exhausted = False
            if exhausted:
                await asyncio.sleep(0.05)
                continue
            # A sender slower than the rate (a lifted limit) claims more only as sends finish:
            # at most MOST_IN_FLIGHT in memory at once.
            while self.unfinished > MOST_IN_FLIGHT // 2:
                self.room.clear()
                await self.room.wait()
            # A sender behind its slots (a busy machine) takes more only once it has caught up
            # to within a grant: a crash then leaves a few rows `sending` (shown unknown), not
            # seconds of sends marked and waiting, and no slot is used up unsent.
            per_grant = max(1, int(self.rate * SLOT_HORIZON))
            if len(self.undeparted) > per_grant:
                self.left.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.left.wait(), BEHIND_LOOK_AGAIN)
                continue  # the bookkeeping meanwhile: answers, a stop, the job's deadline
            await asyncio.sleep(max(0.0, next_ask - time.monotonic()))
            wanted = max(1, min(MOST_IN_FLIGHT - self.unfinished, per_grant))
            grant, granted_at, batch = await self._in_db(self._take_and_claim, wanted)
            if not grant.slots:
                next_ask = granted_at + max(grant.delay, 0.01)
                if grant.delay > FLOOD_WAIT and next_ask > self.deadline:
                    self.deferral = Deferral(grant.delay, _flood_wait(grant.delay))
                    break
                continue
            if len(batch) < grant.slots:
                exhausted = True
            first_slot = granted_at + grant.delay
            for i, send in enumerate(batch):
                task = asyncio.create_task(self._send_one(api, send, first_slot + i / self.rate))
                tasks.add(task)
                self.undeparted[send.delivery.pk] = task
            self.unfinished += len(batch)
            # Ask for more slots shortly before these are used up (never far ahead): timed from
            # the slots themselves, so time spent claiming does not make the next ask late. A
            # quarter of the horizon ahead, so each grant covers three quarters of it: at 30/s,
            # 6 sends a round of queries instead of 4 (a late ask is caught up, see Departures).
            next_ask = first_slot + grant.slots / self.rate - SLOT_HORIZON / 4
        for task in self.undeparted.values():
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await self._flush()
        if self.cancelled:
            await self._in_db(self._cancel_unsent)

    async def _flush(self) -> None:
        done, self.finished = self.finished, []
        if done:
            await self._in_db(self._record, done)

    def _bookkeeping(self, done: list[Outcome], check_stop: bool, check_retries: bool) -> tuple[bool, bool]:
        """Record `done`; then whether the sender stops (asked when `check_stop`) and whether
        retries fell due (asked when `check_retries`)."""
        if done:
            self._record(done)
        if check_stop and self._stopped():
            return True, False
        return False, check_retries and self._due_retries()

    def _take_and_claim(self, wanted: int) -> tuple[Grant, float, list[Send]]:
        """Up to `wanted` send slots, when they were granted, and as many deliveries claimed."""
        grant = self.limiter.take(self.rate_key, self.rate, wanted, SLOT_HORIZON)
        return grant, time.monotonic(), self._claim(grant.slots) if grant.slots else []

    def _due_retries(self) -> bool:
        now = time.monotonic()
        due = []
        while self.retries and self.retries[0].due <= now:
            due.append(heapq.heappop(self.retries).delivery_id)
        if due:
            Delivery.objects.filter(pk__in=due, status=Delivery.Status.RETRYING).update(status=Delivery.Status.PENDING)
        return bool(due)

    def _stopped(self) -> bool:
        """The broadcast was paused or cancelled, its send window has closed, or Telegram is
        unreachable for the bot."""
        status = Broadcast.objects.filter(pk=self.broadcast.pk).values_list("status", flat=True).first()
        if status == Broadcast.Status.CANCELLED:
            self.cancelled = True
            self._cancel_unsent()
            self.retries.clear()
        if status != Broadcast.Status.SENDING:
            return True
        if self.window and (wait := self.window.seconds_until_open(now := timezone.now())):
            self.deferral = Deferral(wait, self.window.closed_reason(now))
            return True
        if outage := circuit.wait_for(self.circuit_key):
            self.deferral = Deferral(outage.wait, f"Telegram {outage.describe()}")
            return True
        return False

    def _claimable_left(self) -> bool:
        """Something to claim, once the fan-out's next batches are made if need be."""
        while not self.deliveries.claimable(timezone.now()).exists():
            if not fan_out_more(self.broadcast.pk):
                return self.deliveries.claimable(timezone.now()).exists()
        return True

    def _cancel_unsent(self) -> None:
        self.deliveries.filter(status__in=[Delivery.Status.PENDING, Delivery.Status.RETRYING]).update(
            status=Delivery.Status.CANCELLED, claimed_by="", claimed_at=None
        )

    def _trip(self) -> Deferral | None:
        """A send found Telegram unreachable, or its token rejected: open the bot's circuit.
        A rejected token pauses the bot's broadcasts until an operator resumes them."""
        outage = telegram_api.trip(self.broadcast.bot, self.outage)
        if telegram_api.token_rejected(self.outage):
            Broadcast.objects.filter(bot_id=self.broadcast.bot_id, status=Broadcast.Status.SENDING).update(
                status=Broadcast.Status.PAUSED, stall_reason=TOKEN_REJECTED, stalled_until=None
            )
            return None
        if self._paused_past_horizon(outage):
            return None
        return Deferral(outage.wait, f"Telegram {outage.describe()}")

    def _paused_past_horizon(self, outage: circuit.Outage) -> bool:
        """Telegram, found unreachable again just now, has kept this broadcast waiting for
        TELEGRAM_OUTAGE_HORIZON: pause it until an operator resumes it (the open circuit keeps
        the alert raised). Only a sender whose own request failed pauses, never one waiting
        behind another's probe: resumed once Telegram is back, a broadcast is not paused again
        before a probe has closed the circuit."""
        horizon = timedelta(seconds=settings.TELEGRAM_OUTAGE_HORIZON)
        if timezone.now() - max(outage.since, self.broadcast.started_at or outage.since) < horizon:
            return False
        since = timezone.localtime(outage.since)
        reason = (
            f"Paused: Telegram unreachable for {duration(horizon)} since {since:%Y-%m-%d %H:%M}"
            f" ({outage.reason[:100]}); resume it once Telegram is back."
        )
        if Broadcast.objects.filter(pk=self.broadcast.pk, status=Broadcast.Status.SENDING).update(
            status=Broadcast.Status.PAUSED, stall_reason=reason, stalled_until=None
        ):
            logger.warning("Broadcast %s paused: Telegram unreachable since %s", self.broadcast.pk, outage.since)
        return True

    def _wait_outlives_job(self, only_retries_left: bool) -> Deferral | None:
        now = time.monotonic()
        if self.departures.paused_until > self.deadline:
            return Deferral(self.departures.paused_until - now, _flood_wait(self.departures.paused_until - now))
        if only_retries_left and self.retries and self.retries[0].due > self.deadline:
            return Deferral(self.retries[0].due - now, "retrying sends that failed")
        if now >= self.deadline:
            self.carry_on = True
        return None

    def _claim(self, wanted: int) -> list[Send]:
        """The next `wanted` deliveries claimed ahead (CLAIM_AHEAD), claiming more first if
        fewer are left, marked `sending`."""
        if len(self.claimed) < wanted:
            ahead = max(wanted, min(MOST_IN_FLIGHT, math.ceil(self.rate * CLAIM_AHEAD)))
            self.claimed.extend(self._claim_more(ahead - len(self.claimed)))
        sends = [self.claimed.popleft() for _ in range(min(wanted, len(self.claimed)))]
        ids = [send.delivery.pk for send in sends]
        if Delivery.objects.start_sending(ids, self.claimer) == len(ids):
            return sends
        # A cancel took some of them since the claim: send only those marked.
        sending = set(
            Delivery.objects.filter(pk__in=ids, status=Delivery.Status.SENDING, claimed_by=self.claimer).values_list(
                "pk", flat=True
            )
        )
        return [send for send in sends if send.delivery.pk in sending]

    def _release_claimed(self) -> None:
        """Deliveries claimed ahead and never marked `sending` are free for the next sender at once."""
        ids, self.claimed = [send.delivery.pk for send in self.claimed], deque()
        if ids:
            Delivery.objects.filter(pk__in=ids, status=Delivery.Status.PENDING, claimed_by=self.claimer).update(
                claimed_by="", claimed_at=None
            )

    def _claim_more(self, wanted: int) -> list[Send]:
        """The next pending deliveries, claimed and rendered; members who opted out or blocked
        the bot since the fan-out are skipped instead."""
        gone_machines = machines_gone()  # read once for the walk and the claim
        claimable = self.deliveries.claimable(timezone.now(), gone_machines).order_by("pk").values_list("pk", flat=True)
        ids = list(claimable.filter(pk__gt=self.after)[:wanted])
        if ids:
            self.after = ids[-1]
        if len(ids) < wanted:
            ids += claimable.filter(pk__lt=ids[0] if ids else self.after + 1)[: wanted - len(ids)]
        won = Delivery.objects.claim(ids, self.claimer, gone_machines)
        rows = {
            row[0]: row
            for row in Delivery.objects.filter(pk__in=won).values_list(
                *Claimed._fields,
                *("member_id", "member__first_name", "member__last_name", "member__username"),
                *("member__is_subscribed", "member__is_blocked"),
            )
        }
        claimed, members, gone = [], [], []
        for pk in won:
            if pk not in rows:  # Its member deleted while the fan-out made it (no constraint in the database).
                gone.append(pk)
                continue
            *delivery, member_id, first_name, last_name, username, subscribed, blocked = rows[pk]
            if not subscribed or blocked:
                gone.append(pk)
                continue
            claimed.append(Claimed(*delivery))
            members.append(TelegramUser(pk=member_id, first_name=first_name, last_name=last_name, username=username))
        if gone:
            Delivery.objects.filter(pk__in=gone, claimed_by=self.claimer).update(
                status=Delivery.Status.SKIPPED, error="Opted out or blocked", claimed_by="", claimed_at=None
            )
            self.result.skipped += len(gone)
        pledges: dict[int, list[Pledge]] = {}
        if self.needs_pledges:
            for pledge in Pledge.objects.filter(member__in=[m.pk for m in members]).order_by("created_at"):
                pledges.setdefault(pledge.member_id, []).append(pledge)
        fallback, mode = self.broadcast.no_pledge_fallback, self.parse_mode or ""
        return [
            Send(d, render(self.versions.of(d).text, m, pledges.get(m.pk, []), mode, fallback))
            for d, m in zip(claimed, members, strict=True)
        ]

    async def _send_one(self, api: telegram.Bot, send: Send, slot: float) -> None:
        delivery = send.delivery
        try:
            try:
                departure = await self.departures.depart(slot)
            except asyncio.CancelledError:
                # The sender stopped first: this one never left.
                self.finished.append(Outcome(delivery.pk, Delivery.Status.PENDING, attempt=0))
                return
            finally:
                self.undeparted.pop(delivery.pk, None)
                self.left.set()
            closed = self.window is not None and not self.window.contains(timezone.now())
            if self.outage is not None or closed:
                # It never leaves: an earlier send found Telegram unreachable (the circuit's
                # probe is one request, not every send already scheduled), or the send window
                # closed between its claim and its slot.
                self.finished.append(Outcome(delivery.pk, Delivery.Status.PENDING, attempt=0))
                return
            try:
                message = await self._send(api, delivery, send.text, self.versions.of(delivery))
            except Exception as exc:
                self.departures.answered(departure)
                self._on_error(delivery, exc)
            else:
                self.departures.answered(departure)
                # Stamped as the answer arrives, not when the batch is recorded.
                self.finished.append(
                    Outcome(delivery.pk, Delivery.Status.SENT, message_id=message["message_id"], sent_at=timezone.now())
                )
        finally:
            self.unfinished -= 1
            if self.unfinished <= MOST_IN_FLIGHT // 2:
                self.room.set()

    async def _send(self, api: telegram.Bot, delivery: Claimed, text: str, version: Version) -> dict:
        """Raw answers: building a telegram.Message per send costs more than the send, and
        parameters encoded at once (bots.transport.JsonBody). An attachment is uploaded once
        per sender (PTB builds its multipart body); every later send names Telegram's file_id."""
        chat_id, buttons = delivery.chat_id, self.keyboards.of(version, delivery.pk)
        if not version.attachment:
            return await self._post(api, "sendMessage", self._params(chat_id, buttons, text=text))
        method, field = ("sendPhoto", "photo") if version.is_photo else ("sendDocument", "document")
        caption = self._params(chat_id, buttons, caption=text)
        name = version.attachment.name
        if name not in self.file_ids:
            async with self.uploading:
                if name not in self.file_ids:
                    upload = attachment(version.attachment)
                    message = await api.do_api_request(method, api_kwargs={**caption, field: upload})
                    answer = message[field]
                    self.file_ids[name] = (answer[-1] if isinstance(answer, list) else answer)["file_id"]
                    return message
        return await self._post(api, method, {**caption, field: self.file_ids[name]})

    @staticmethod
    async def _post(api: telegram.Bot, method: str, params: dict) -> dict:
        return await api.request.post(f"{api.base_url}/{method}", request_data=JsonBody(params))

    def _params(self, chat_id: int, buttons: dict | None, **content: str) -> dict:
        params = {"chat_id": chat_id, **content}
        if self.parse_mode:
            params["parse_mode"] = self.parse_mode
        if buttons:
            params["reply_markup"] = buttons
        if self.broadcast.allow_paid_broadcast:
            params["allow_paid_broadcast"] = True
        return params

    def _on_error(self, delivery: Claimed, exc: Exception) -> None:
        """Sort a failed send: an outage or a 429 puts it back (not a try); one that may
        have arrived is `unknown`; a permanent error or the last attempt fails it; anything
        else is retried after the queue's backoff."""
        reason = redaction.describe(exc)[:1000]
        if isinstance(exc, Unreachable) or telegram_api.token_rejected(exc):
            self.outage = self.outage or exc
            reason = telegram_api.unreachable_reason(exc)
            self.finished.append(Outcome(delivery.pk, Delivery.Status.PENDING, reason, DEFERRED, attempt=0))
            return
        if isinstance(exc, NoAnswer):
            unknown = f"{exc}: it may have arrived, so it is not sent again."
            self.finished.append(Outcome(delivery.pk, Delivery.Status.UNKNOWN, unknown, MAYBE_DONE))
            return
        classification = classify(exc)
        if classification.error_class == RATE_LIMITED:
            self.departures.pause(classification.retry_after)
            self.db.submit(self.limiter.pause, self.rate_key, classification.retry_after)
            self.result.rate_limited += 1
            self.finished.append(Outcome(delivery.pk, Delivery.Status.PENDING, reason, RATE_LIMITED, attempt=0))
        elif classification.error_class == PERMANENT or delivery.attempts + 1 >= self.policy.max_attempts:
            if isinstance(exc, telegram.error.Forbidden):
                failure, error_class = f"The member blocked the bot ({reason})", Delivery.ErrorClass.BLOCKED
            else:
                failure, error_class = reason, classification.error_class
            self.finished.append(Outcome(delivery.pk, Delivery.Status.FAILED, failure, error_class))
        else:
            delay = self.policy.backoff_delay(delivery.attempts + 1)
            heapq.heappush(self.retries, _Retry(time.monotonic() + delay, delivery.pk))
            self.finished.append(Outcome(delivery.pk, Delivery.Status.RETRYING, reason, RETRIABLE))

    def _record(self, done: list[Outcome]) -> None:
        """One executemany: Django's bulk_update builds a CASE per field per row and costs
        seconds per thousand rows on SQLite. Only rows still `sending` change: a cancel
        may have got there first."""
        now = timezone.now()
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.executemany(
                f"UPDATE {Delivery._meta.db_table} SET status = %(status)s, error = %(error)s, "
                "error_class = %(error_class)s, message_id = %(message_id)s, sent_at = %(sent_at)s, "
                "attempts = attempts + %(attempt)s, claimed_by = '', claimed_at = NULL "
                f"WHERE id = %(delivery_id)s AND status = '{Delivery.Status.SENDING}'",
                [o._asdict() for o in done],
            )
        blocked = [o.delivery_id for o in done if o.error_class == Delivery.ErrorClass.BLOCKED]
        if blocked:
            TelegramUser.objects.filter(deliveries__pk__in=blocked).update(is_blocked=True, blocked_at=now)
        sent = sum(1 for o in done if o.status == Delivery.Status.SENT)
        self.result.sent += sent
        self.result.failed += sum(1 for o in done if o.status == Delivery.Status.FAILED)
        if sent:
            self._sending_again()

    def _sending_again(self) -> None:
        """Telegram accepted a send: whatever stalled this bot's sending is over."""
        circuit.reset(self.circuit_key)
        if not self.stall_cleared:
            self.stall_cleared = True
            Broadcast.objects.filter(pk=self.broadcast.pk).exclude(stall_reason="").update(
                stall_reason="", stalled_until=None
            )


def attachment(attached: FieldFile) -> telegram.InputFile:
    """A photo or document to upload."""
    with attached.open("rb") as handle:
        return telegram.InputFile(handle.read(), filename=Path(attached.name).name)


def _flood_wait(seconds: float) -> str:
    return f"waiting {seconds:.0f} s for Telegram's flood control"
