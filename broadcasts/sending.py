"""Sending a broadcast: fan-out into deliveries, then chunks sent at the bot's rate.

Each delivery goes pending -> sending -> sent (with its message id), failed, or back to
pending for a retry. A delivery is marked `sending` just before its group of sends goes
out; a chunk that finds `sending` rows when it starts was run before by a worker that
died, and those rows become `unknown`: they may have reached the member, so they are
never sent again automatically."""

import asyncio
import heapq
import logging
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import telegram
from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.db.models import Prefetch
from django.utils import timezone
from telegram.warnings import PTBUserWarning

from bots import telegram_api
from bots.models import TelegramUser
from broadcasts.audiences import recipients
from broadcasts.models import Broadcast, Delivery, Pledge
from broadcasts.personalize import render
from queueing.errors import PERMANENT, RATE_LIMITED, RETRIABLE, classify
from queueing.queues import get_queue
from queueing.ratelimit import Grant, get_limiter

logger = logging.getLogger(__name__)
# sendMessage through do_api_request on purpose (see ChunkSender._send); PTB would say so each time.
warnings.filterwarnings("ignore", message="Please use 'Bot.send", category=PTBUserWarning)

SMALL_BROADCAST = 100
CHUNK_SIZE = 1000
MAX_SEND_ATTEMPTS = 3
RETRY_BACKOFF = 2.0
# Claim only send slots that start this soon, so replies are never queued behind much.
SLOT_HORIZON = 0.25
UNFINISHED = (Delivery.Status.PENDING, Delivery.Status.SENDING, Delivery.Status.RETRYING)


def fan_out(broadcast: Broadcast) -> int:
    """One INSERT ... SELECT creates every delivery: no query per member."""
    members = recipients(broadcast).order_by("pk").values_list("pk", "telegram_id")
    select_sql, params = members.query.sql_with_params()
    table = Delivery._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (broadcast_id, member_id, chat_id, status, attempts, error, error_class) "
            f"SELECT %s, sub.*, %s, 0, '', '' FROM ({select_sql}) sub",
            [broadcast.pk, Delivery.Status.PENDING, *params],
        )
        return cursor.rowcount


def chunk_bounds(broadcast: Broadcast) -> list[tuple[int, int]]:
    """Id ranges of the unfinished deliveries, each small enough to send in half the
    `broadcasts` queue's timeout at the bot's rate."""
    rate = settings.TELEGRAM_PAID_RATE_LIMIT if broadcast.allow_paid_broadcast else settings.TELEGRAM_RATE_LIMIT
    size = max(10, min(CHUNK_SIZE, int(rate * get_queue("broadcasts").timeout / 2)))
    ids = list(broadcast.deliveries.filter(status__in=UNFINISHED).order_by("pk").values_list("pk", flat=True))
    return [(ids[i], ids[min(i + size, len(ids)) - 1]) for i in range(0, len(ids), size)]


def finish_if_complete(broadcast: Broadcast) -> bool:
    if broadcast.deliveries.filter(status__in=UNFINISHED).exists():
        return False
    return bool(
        Broadcast.objects.filter(pk=broadcast.pk, status=Broadcast.Status.SENDING).update(
            status=Broadcast.Status.DONE, finished_at=timezone.now()
        )
    )


@dataclass(order=True)
class _Retry:
    due: float
    delivery_id: int = field(compare=False)


@dataclass
class ChunkResult:
    sent: int = 0
    failed: int = 0
    skipped: int = 0
    rate_limited: int = 0

    def as_dict(self) -> dict[str, int]:
        return self.__dict__.copy()

    def add(self, other: "ChunkResult") -> None:
        for name, value in other.__dict__.items():
            setattr(self, name, getattr(self, name) + value)


class ChunkSender:
    """Sends the deliveries of one id range of a broadcast, as fast as the bot's rate lets.

    1. Claim send slots from the shared limiter, at most SLOT_HORIZON ahead.
    2. Mark as many pending deliveries `sending` and schedule each at its slot.
    3. As answers come back, record them in bulk; 429 pauses the bot's slots for
       everyone and puts the delivery back; network errors retry it after a backoff.
    4. Stop when nothing is pending, waiting for a retry, or in flight; or when the
       broadcast is paused or cancelled."""

    def __init__(self, broadcast: Broadcast, first_id: int, last_id: int):
        self.broadcast = broadcast
        self.deliveries = Delivery.objects.filter(broadcast=broadcast, pk__gte=first_id, pk__lte=last_id)
        paid = broadcast.allow_paid_broadcast
        limit = settings.TELEGRAM_PAID_RATE_LIMIT if paid else settings.TELEGRAM_RATE_LIMIT
        self.rate = limit * (1 - settings.TELEGRAM_RATE_MARGIN)
        self.rate_key = f"bot:{broadcast.bot_id}" + (":paid" if paid else "")
        self.limiter = get_limiter()
        self.result = ChunkResult()
        self.text = broadcast.body
        self.parse_mode = broadcast.effective_parse_mode or None
        self.buttons = self._buttons()
        self.media = (
            ("sendPhoto", "photo") if broadcast.photo else ("sendDocument", "document") if broadcast.document else None
        )
        self.file_id: str | None = None
        self.uploading = asyncio.Lock()
        self.retries: list[_Retry] = []
        self.failure_classes: dict[int, str] = {}
        self.finished: list[tuple[int, str, int | None, str]] = []
        self.last_departure = 0.0
        self.paused_until = 0.0
        self.departures = asyncio.Lock()
        self.db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="broadcast-db")

    def run(self) -> ChunkResult:
        self.deliveries.filter(status=Delivery.Status.SENDING).update(
            status=Delivery.Status.UNKNOWN, error="The worker sending this stopped before Telegram answered."
        )
        self.deliveries.filter(status=Delivery.Status.RETRYING).update(status=Delivery.Status.PENDING)
        try:
            telegram_api.run(self._send_all())
        finally:
            self.db.submit(close_old_connections).result()
            self.db.shutdown()
        return self.result

    async def _in_db(self, func, *args):
        return await asyncio.get_running_loop().run_in_executor(self.db, func, *args)

    async def _send_all(self) -> None:
        api = await telegram_api.api_for_async(self.broadcast.bot)
        tasks: set[asyncio.Task] = set()
        exhausted = False
        while True:
            await self._flush()
            if await self._in_db(self._stopped):
                break
            exhausted = exhausted and not await self._in_db(self._due_retries)
            if exhausted and not self.retries and not tasks:
                break
            if exhausted:
                await asyncio.sleep(0.05)
                tasks = {t for t in tasks if not t.done()}
                continue
            wanted = max(1, int(self.rate * SLOT_HORIZON))
            grant, granted_at = await self._in_db(self._take, wanted)
            if not grant.slots:
                await asyncio.sleep(max(grant.delay, 0.01))
                continue
            batch = await self._in_db(self._claim, grant.slots)
            if len(batch) < grant.slots:
                exhausted = True
            first_slot = granted_at + grant.delay
            for i, (delivery, text) in enumerate(batch):
                tasks.add(asyncio.create_task(self._send_one(api, delivery, text, first_slot + i / self.rate)))
            tasks = {t for t in tasks if not t.done()}
            # Ask for more slots shortly before these are used up, never far ahead.
            await asyncio.sleep(max(0.0, grant.delay + grant.slots / self.rate - SLOT_HORIZON / 2))
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await self._flush()

    async def _flush(self) -> None:
        done, self.finished = self.finished, []
        if done:
            await self._in_db(self._record, done)

    def _take(self, wanted: int) -> tuple[Grant, float]:
        return self.limiter.take(self.rate_key, self.rate, wanted, SLOT_HORIZON), time.monotonic()

    def _due_retries(self) -> bool:
        now = time.monotonic()
        due = []
        while self.retries and self.retries[0].due <= now:
            due.append(heapq.heappop(self.retries).delivery_id)
        if due:
            Delivery.objects.filter(pk__in=due, status=Delivery.Status.RETRYING).update(status=Delivery.Status.PENDING)
        return bool(due)

    def _stopped(self) -> bool:
        status = Broadcast.objects.filter(pk=self.broadcast.pk).values_list("status", flat=True).first()
        if status == Broadcast.Status.CANCELLED:
            self.deliveries.filter(status__in=[Delivery.Status.PENDING, Delivery.Status.RETRYING]).update(
                status=Delivery.Status.CANCELLED
            )
            self.retries.clear()
        return status != Broadcast.Status.SENDING

    def _claim(self, wanted: int) -> list[tuple[Delivery, str]]:
        """The next pending deliveries, marked `sending`; members who opted out or blocked
        the bot since the fan-out are skipped instead."""
        with transaction.atomic():
            ids = list(self.deliveries.pending().order_by("pk").values_list("pk", flat=True)[:wanted])
            # Conditional, and re-read: only rows this sender moved from pending are its own.
            token = f"claimed by {id(self)}"
            self.deliveries.pending().filter(pk__in=ids).update(status=Delivery.Status.SENDING, error=token)
        rows = list(
            Delivery.objects.filter(pk__in=ids, status=Delivery.Status.SENDING, error=token)
            .select_related("member")
            .prefetch_related(Prefetch("member__pledges", queryset=Pledge.objects.order_by("created_at")))
        )
        gone = [d.pk for d in rows if not d.member.is_subscribed or d.member.is_blocked]
        if gone:
            Delivery.objects.filter(pk__in=gone).update(status=Delivery.Status.SKIPPED, error="Opted out or blocked")
            self.result.skipped += len(gone)
        fallback = self.broadcast.no_pledge_fallback
        return [
            (d, render(self.text, d.member, list(d.member.pledges.all()), self.parse_mode or "", fallback))
            for d in rows
            if d.pk not in gone
        ]

    async def _depart(self, slot: float) -> None:
        """Wait for the slot, and never leave sooner than 1/rate after the previous send (a
        loop that wakes late must not let several sends out at once) nor during a 429 pause."""
        await asyncio.sleep(max(0.0, slot - time.monotonic()))
        async with self.departures:
            while (wait := max(self.paused_until, self.last_departure + 1 / self.rate) - time.monotonic()) > 0:
                await asyncio.sleep(wait)
            self.last_departure = time.monotonic()

    async def _send_one(self, api: telegram.Bot, delivery: Delivery, text: str, slot: float) -> None:
        await self._depart(slot)
        try:
            message = await self._send(api, delivery.chat_id, text)
        except Exception as exc:
            self._on_error(delivery, exc)
        else:
            self.finished.append((delivery.pk, Delivery.Status.SENT, message["message_id"], ""))

    async def _send(self, api: telegram.Bot, chat_id: int, text: str) -> dict:
        """Raw answers: building a telegram.Message per send costs more than the send. An
        attachment is uploaded once per chunk; every later send names Telegram's file_id."""
        if not self.media:
            return await api.do_api_request("sendMessage", api_kwargs=self._params(chat_id, text=text))
        method, field = self.media
        caption = self._params(chat_id, caption=text)
        if self.file_id is None:
            async with self.uploading:
                if self.file_id is None:
                    upload = self._upload()
                    message = await api.do_api_request(method, api_kwargs={**caption, field: upload})
                    answer = message[field]
                    self.file_id = (answer[-1] if isinstance(answer, list) else answer)["file_id"]
                    return message
        return await api.do_api_request(method, api_kwargs={**caption, field: self.file_id})

    def _upload(self) -> telegram.InputFile:
        attached = self.broadcast.photo or self.broadcast.document
        with attached.open("rb") as handle:
            return telegram.InputFile(handle.read(), filename=Path(attached.name).name)

    def _params(self, chat_id: int, **content: str) -> dict:
        params = {"chat_id": chat_id, **content}
        if self.parse_mode:
            params["parse_mode"] = self.parse_mode
        if self.buttons:
            params["reply_markup"] = self.buttons
        if self.broadcast.allow_paid_broadcast:
            params["allow_paid_broadcast"] = True
        return params

    def _on_error(self, delivery: Delivery, exc: Exception) -> None:
        classification = classify(exc)
        reason = f"{type(exc).__name__}: {exc}"[:1000]
        if classification.error_class == RATE_LIMITED:
            self.paused_until = max(self.paused_until, time.monotonic() + classification.retry_after)
            self.db.submit(self.limiter.pause, self.rate_key, classification.retry_after)
            self.result.rate_limited += 1
            self.finished.append((delivery.pk, Delivery.Status.PENDING, None, reason))
        elif classification.error_class == PERMANENT or delivery.attempts + 1 >= MAX_SEND_ATTEMPTS:
            blocked = isinstance(exc, telegram.error.Forbidden)
            self.finished.append((delivery.pk, Delivery.Status.FAILED, None, ("blocked: " if blocked else "") + reason))
            self.failure_classes[delivery.pk] = classification.error_class
        else:
            delay = RETRY_BACKOFF * 3**delivery.attempts
            heapq.heappush(self.retries, _Retry(time.monotonic() + delay, delivery.pk))
            self.finished.append((delivery.pk, Delivery.Status.RETRYING, None, reason))

    def _record(self, done: list[tuple[int, str, int | None, str]]) -> None:
        """One executemany: Django's bulk_update builds a CASE per field per row and costs
        seconds per thousand rows on SQLite."""
        now = timezone.now()
        error_classes = {Delivery.Status.RETRYING: RETRIABLE, Delivery.Status.PENDING: RATE_LIMITED}
        rows = [
            (
                status,
                error,
                self.failure_classes.pop(pk, "") if status == Delivery.Status.FAILED else error_classes.get(status, ""),
                message_id,
                now if status == Delivery.Status.SENT else None,
                0 if status == Delivery.Status.PENDING else 1,  # a 429 is not a try
                pk,
            )
            for pk, status, message_id, error in done
        ]
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.executemany(
                f"UPDATE {Delivery._meta.db_table} SET status = %s, error = %s, error_class = %s, message_id = %s, "
                "sent_at = %s, attempts = attempts + %s WHERE id = %s",
                rows,
            )
        blocked = [
            pk for pk, status, _, error in done if status == Delivery.Status.FAILED and error.startswith("blocked")
        ]
        if blocked:
            TelegramUser.objects.filter(deliveries__pk__in=blocked).update(is_blocked=True, blocked_at=now)
        self.result.sent += sum(1 for _, status, _, _ in done if status == Delivery.Status.SENT)
        self.result.failed += sum(1 for _, status, _, _ in done if status == Delivery.Status.FAILED)

    def _buttons(self) -> telegram.InlineKeyboardMarkup | None:
        buttons = [b for b in self.broadcast.buttons if b.get("text") and b.get("url")]
        if not buttons:
            return None
        return telegram.InlineKeyboardMarkup(
            [[telegram.InlineKeyboardButton(b["text"], url=b["url"])] for b in buttons]
        )
