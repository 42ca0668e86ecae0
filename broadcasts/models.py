from collections.abc import Iterable
from datetime import date, datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.core.validators import MaxValueValidator
from django.db import connection, models, transaction
from django.db.models import Q
from django.utils import timezone

from bots.models import Bot, TelegramUser
from broadcasts.window import SendWindow, zone
from queueing.errors import DEFERRED, MAYBE_DONE, PERMANENT, RATE_LIMITED, RETRIABLE
from queueing.heartbeat import machines_gone


class PledgeQuerySet(models.QuerySet):
    def attach_to(self, member: TelegramUser) -> int:
        """Pledges imported for this Telegram id before the member pressed /start."""
        return self.filter(bot=member.bot, telegram_id=member.telegram_id, member__isnull=True).update(member=member)


class Pledge(models.Model):
    """What a member promised to give, and how much of it is paid."""

    bot = models.ForeignKey(Bot, on_delete=models.CASCADE, related_name="pledges")
    member = models.ForeignKey(TelegramUser, null=True, blank=True, on_delete=models.SET_NULL, related_name="pledges")
    telegram_id = models.BigIntegerField(help_text="The member's Telegram id; the pledge attaches when they /start.")
    name = models.CharField(max_length=200, blank=True, help_text="The donor's name, as the imported file gives it.")
    amount = models.DecimalField(max_digits=14, decimal_places=2)
    paid_amount = models.DecimalField(max_digits=14, decimal_places=2, default=Decimal("0"))
    currency = models.CharField(max_length=8, default=settings.PLEDGE_DEFAULT_CURRENCY)
    due_date = models.DateField(null=True, blank=True)
    campaign = models.CharField(max_length=100, blank=True)
    note = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    objects = PledgeQuerySet.as_manager()

    class Meta:
        # campaign: the list's campaign filter reads its distinct values from the index.
        indexes = [models.Index(fields=["bot", "telegram_id"]), models.Index(fields=["campaign"])]

    def __str__(self) -> str:
        return f"{self.format(self.amount)} by {self.member or self.name or self.telegram_id}"

    @property
    def balance(self) -> Decimal:
        return max(self.amount - self.paid_amount, Decimal("0"))

    @property
    def days_remaining(self) -> int | None:
        if self.due_date is None:
            return None
        return max((self.due_date - date.today()).days, 0)

    @property
    def is_overdue(self) -> bool:
        return bool(self.due_date and self.due_date < date.today() and self.balance > 0)

    @property
    def days_overdue(self) -> int:
        """Days since the due date of a pledge with a balance still due; 0 otherwise."""
        return (date.today() - self.due_date).days if self.is_overdue else 0

    def format(self, value: Decimal) -> str:
        """1234.5 USD -> "1,234.50 USD"; whole amounts drop the cents."""
        text = f"{value:,.0f}" if value == value.to_integral_value() else f"{value:,.2f}"
        return f"{text} {self.currency}"


class ParseMode(models.TextChoices):
    PLAIN = "", "Plain text"
    HTML = "HTML", "HTML"
    MARKDOWN_V2 = "MarkdownV2", "MarkdownV2"


class MessageTemplate(models.Model):
    """Reusable text with placeholders (#name, #balance, ...)."""

    name = models.CharField(max_length=100, unique=True)
    text = models.TextField()
    parse_mode = models.CharField(max_length=16, choices=ParseMode.choices, blank=True)

    def __str__(self) -> str:
        return self.name


class Audience(models.TextChoices):
    SUBSCRIBERS = "subscribers", "All subscribers"
    BALANCE_DUE = "balance_due", "With a balance due"
    OVERDUE = "overdue", "Overdue"
    FULLY_PAID = "fully_paid", "Fully paid"
    NO_PLEDGE = "no_pledge", "With no pledge"
    CAMPAIGN = "campaign", "By campaign"
    LANGUAGE = "language", "By language"
    HAND_PICKED = "hand_picked", "Hand-picked members"
    STAFF = "staff", "Staff only (test send)"


STOP_BUTTON_TEXT = "Stop these messages"


def url_buttons(buttons: list[dict]) -> list[dict]:
    """The buttons sent, in order: a button's position here is its number in click tracking."""
    return [button for button in buttons if button.get("text") and button.get("url")]


class ABMeasure(models.TextChoices):
    CLICKS = "clicks", "Most members who clicked, per message sent"
    FEWEST_BLOCKS = "fewest_blocks", "Fewest members who blocked the bot, per message sent"


class Broadcast(models.Model):
    """One message to many members, personalised for each."""

    class Status(models.TextChoices):
        DRAFT = "draft"
        SCHEDULED = "scheduled"
        SENDING = "sending"
        PAUSED = "paused"
        DONE = "done"
        CANCELLED = "cancelled"

    bot = models.ForeignKey(Bot, on_delete=models.CASCADE, related_name="broadcasts")
    title = models.CharField(max_length=200, blank=True, help_text="For operators; members never see it.")
    template = models.ForeignKey(MessageTemplate, null=True, blank=True, on_delete=models.SET_NULL)
    text = models.TextField(blank=True, help_text="Placeholders: #name #first_name #pledge #balance ...")
    parse_mode = models.CharField(max_length=16, choices=ParseMode.choices, blank=True)
    photo = models.FileField(upload_to="broadcasts/", blank=True)
    document = models.FileField(upload_to="broadcasts/", blank=True)
    buttons = models.JSONField(
        default=list, blank=True, help_text='URL buttons: [{"text": "Pay", "url": "https://..."}]'
    )
    audience = models.CharField(max_length=16, choices=Audience.choices, default=Audience.SUBSCRIBERS)
    audience_value = models.CharField(
        max_length=200, blank=True, help_text="The campaign or language code, for those audiences."
    )
    members = models.ManyToManyField(TelegramUser, blank=True, help_text="For the hand-picked audience.")
    no_pledge_fallback = models.CharField(
        max_length=100, default="-", help_text="Shown for pledge placeholders of members without a pledge."
    )
    allow_paid_broadcast = models.BooleanField(
        default=False, help_text="Telegram's paid broadcasts: up to 1000 messages/s, charged in Stars."
    )
    scheduled_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DRAFT)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    # The fan-out goes on in batches (broadcasts.sending.fan_out): members with ids above this
    # get their deliveries yet; None once every member has one.
    fan_out_after = models.BigIntegerField(null=True, blank=True, default=0, editable=False)
    finished_at = models.DateTimeField(null=True, blank=True)
    stall_reason = models.CharField(
        max_length=300, blank=True, help_text="Why sending is waiting or paused, for operators; empty when it is not."
    )
    stalled_until = models.DateTimeField(null=True, blank=True, help_text="When the wait is expected to end.")
    edited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    approved_at = models.DateTimeField(null=True, blank=True)
    window_start = models.TimeField(
        null=True, blank=True, help_text="Send only from this time of day (with the end and the time zone)."
    )
    window_end = models.TimeField(
        null=True, blank=True, help_text="… until this time; before the start, the window crosses midnight."
    )
    window_timezone = models.CharField(
        max_length=64, blank=True, help_text="Of the send window, e.g. Africa/Addis_Ababa; empty: the server's zone."
    )

    # A/B tests (broadcasts.variants): the arms are this broadcast's own message (A) and its
    # message versions (B-D).
    ab_sample_percent = models.PositiveSmallIntegerField(
        default=0,
        validators=[MaxValueValidator(99)],
        help_text="0: the arms split the whole audience evenly. Otherwise the arms go to this share of the "
        "audience first, and the winner to the rest once it is chosen.",
    )
    ab_wait = models.DurationField(
        default=timedelta(hours=4), help_text="How long after the sample is sent the winner is chosen."
    )
    ab_measure = models.CharField(
        max_length=16, choices=ABMeasure.choices, default=ABMeasure.CLICKS, help_text="How the winner is chosen."
    )
    ab_send_winner = models.BooleanField(
        default=True, help_text="Send the winner to the rest on its own when the wait is over (else an operator does)."
    )
    ab_winner = models.CharField(max_length=1, blank=True, help_text="The arm chosen for the rest of the audience.")
    ab_decided_at = models.DateTimeField(null=True, blank=True)

    # The "Stop these messages" button under every message (broadcasts.unsubscribe).
    stop_button_text = models.CharField(
        max_length=64,
        blank=True,
        default=STOP_BUTTON_TEXT,
        help_text="The inline button that opts a member out at once; empty: no button.",
    )

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "scheduled_at"])]
        permissions = [("send_broadcast", "Can send, schedule, approve and resume broadcasts")]

    def __str__(self) -> str:
        return self.title or f"Broadcast #{self.pk}"

    @property
    def body(self) -> str:
        return self.text or (self.template.text if self.template else "")

    @property
    def effective_parse_mode(self) -> str:
        return self.parse_mode or (self.template.parse_mode if self.template and not self.text else "")

    def counts(self) -> dict[str, int]:
        """Deliveries per status, and the total: from the summary kept when its delivery rows
        were pruned (prune_deliveries), else as the database keeps them counted."""
        found = (
            dict(self.delivery_summaries.values_list("status").annotate(n=models.Sum("count")).order_by())
            or DeliveryCount.objects.filter(broadcast=self).per_status()
        )
        counts = {status: found.get(status, 0) for status in Delivery.Status.values}
        counts["total"] = sum(found.values())
        return counts

    OUTCOMES = ("sent", "skipped", "failed", "unknown", "cancelled")

    def progress(self, window: int = 30) -> dict:
        """Counts, the share finished and the share of each outcome (for a bar split by outcome),
        the send rate over the last `window` seconds (or since the start, if sooner), the time
        left at that rate, and why sending waits, if it does."""
        counts = self.counts()
        unfinished = counts["pending"] + counts["sending"] + counts["retrying"] + counts["held"]
        total = counts["total"]
        now = timezone.now()
        since = max(now - timedelta(seconds=window), self.started_at or now)
        seconds = max((now - since).total_seconds(), 1.0)
        # Every broadcast's sends of the window, on their partial index, then this one's: asked
        # for this broadcast, the planner may take its index and read all its rows while the
        # statistics predate its fan-out (they say it has none).
        recent = dict(
            Delivery.objects.filter(status=Delivery.Status.SENT, sent_at__gte=since)
            .values_list("broadcast")
            .annotate(n=models.Count("pk"))
            .order_by()
        ).get(self.pk, 0)
        rate = recent / seconds if self.status == self.Status.SENDING else 0.0
        return {
            "id": self.pk,
            "status": self.status,
            "counts": counts,
            "finished": total - unfinished,
            "percent": round(100 * (total - unfinished) / total, 1) if total else (100.0 if self.is_over else 0.0),
            "outcomes": {o: round(100 * counts[o] / total, 1) if total else 0.0 for o in self.OUTCOMES},
            "rate": round(rate, 1),
            "eta_seconds": round(unfinished / rate) if rate and unfinished else None,
            "is_over": self.is_over,
            "stall_reason": self.stall_reason if self.is_stalled else "",
            "stalled_until": self.stalled_until.isoformat() if self.is_stalled and self.stalled_until else None,
        }

    @property
    def send_window(self) -> SendWindow | None:
        """The daily window it may send in; None when it may send at any time."""
        if self.window_start is None or self.window_end is None:
            return None
        return SendWindow(self.window_start, self.window_end, zone(self.window_timezone or settings.TIME_ZONE))

    @property
    def awaits_approval(self) -> bool:
        """With BROADCAST_APPROVAL on, it may be neither sent nor scheduled until approved."""
        return settings.BROADCAST_APPROVAL and self.approved_by_id is None

    @property
    def is_stalled(self) -> bool:
        """Sending waits for a reason operators should see (a stale reason on a finished
        broadcast is not shown)."""
        return bool(self.stall_reason) and not self.is_over

    @property
    def is_over(self) -> bool:
        return self.status in (self.Status.DONE, self.Status.CANCELLED)

    @property
    def is_editable(self) -> bool:
        return self.status in (self.Status.DRAFT, self.Status.SCHEDULED)

    @property
    def url_buttons(self) -> list[dict]:
        return url_buttons(self.buttons)

    def _move(self, from_statuses: Iterable[str], to: str, **fields) -> bool:
        """A conditional UPDATE: True when this call made the change, False when the broadcast
        was not in one of `from_statuses` (another operator or a worker got there first)."""
        changed = Broadcast.objects.filter(pk=self.pk, status__in=list(from_statuses)).update(status=to, **fields)
        if changed:
            self.status = to
            for name, value in fields.items():
                setattr(self, name, value)
        return bool(changed)

    def stall(self, reason: str, seconds: float) -> None:
        """Sending waits: say why, and until when, to operators."""
        self.stall_reason, self.stalled_until = reason[:300], timezone.now() + timedelta(seconds=seconds)
        Broadcast.objects.filter(pk=self.pk, status=self.Status.SENDING).update(
            stall_reason=self.stall_reason, stalled_until=self.stalled_until
        )

    def schedule(self) -> bool:
        """draft -> scheduled; start_due_broadcasts starts it when scheduled_at comes."""
        return self.scheduled_at is not None and self._move([self.Status.DRAFT], self.Status.SCHEDULED)

    def approve(self, user) -> bool:
        """A conditional UPDATE, like _move: True when this call approved it, False when it had
        been approved already or is no longer a draft or scheduled."""
        now = timezone.now()
        changed = Broadcast.objects.filter(
            pk=self.pk, approved_by__isnull=True, status__in=[self.Status.DRAFT, self.Status.SCHEDULED]
        ).update(approved_by=user, approved_at=now)
        if changed:
            self.approved_by, self.approved_at = user, now
        return bool(changed)

    def withdraw_approval(self) -> None:
        """Its text or settings changed after approval: the approval no longer covers it. A
        scheduled broadcast that needs approval goes back to draft, so it does not start. The
        caller saves it."""
        self.approved_by, self.approved_at = None, None
        if settings.BROADCAST_APPROVAL and self.status == self.Status.SCHEDULED:
            self.status = self.Status.DRAFT

    def pause(self) -> bool:
        """sending -> paused; its sender stops before its next send and leaves the rest pending."""
        return self._move([self.Status.SENDING], self.Status.PAUSED)

    def resume(self) -> bool:
        """paused -> sending; the caller enqueues start_broadcast for what is left."""
        return self._move([self.Status.PAUSED], self.Status.SENDING, stall_reason="", stalled_until=None)

    def cancel(self) -> int | None:
        """-> cancelled, then every delivery still waiting with it. None when it had already
        finished or been cancelled; otherwise the number of deliveries cancelled.

        The status is committed first: its sender stops at its next look (well under a
        second), where it would otherwise go on sending while a million rows are updated in
        the same transaction. The sender cancels what is waiting too when it sees the status,
        should this process die between the two steps."""
        unfinished = [self.Status.DRAFT, self.Status.SCHEDULED, self.Status.SENDING, self.Status.PAUSED]
        if not self._move(unfinished, self.Status.CANCELLED, finished_at=timezone.now()):
            return None
        waiting = [Delivery.Status.PENDING, Delivery.Status.RETRYING, Delivery.Status.HELD]
        return self.deliveries.filter(status__in=waiting).update(
            status=Delivery.Status.CANCELLED, claimed_by="", claimed_at=None
        )

    def retry_failed(self) -> int:
        """Failed deliveries go back to pending, except those of members who blocked the bot
        (Telegram would refuse them again); a finished broadcast goes back to sending. The
        caller enqueues start_broadcast when the broadcast is sending."""
        return self._send_again(self.deliveries.filter(status=Delivery.Status.FAILED))

    def resend_unknown(self) -> int:
        """Deliveries whose send may have arrived (`unknown`) go back to pending, as in
        retry_failed: the operator's choice, since some members may get the message twice."""
        return self._send_again(self.deliveries.filter(status=Delivery.Status.UNKNOWN))

    def _send_again(self, deliveries: "DeliveryQuerySet") -> int:
        with transaction.atomic():
            locked = Broadcast.objects.select_for_update().get(pk=self.pk)
            if locked.status == self.Status.CANCELLED:
                return 0
            again = deliveries.sendable_again().update(
                status=Delivery.Status.PENDING, attempts=0, error="", error_class="", claimed_by="", claimed_at=None
            )
            self.status = locked.status
            if again:
                self._move([self.Status.DONE], self.Status.SENDING, finished_at=None)
            return again


class DeliveryQuerySet(models.QuerySet):
    def pending(self) -> "DeliveryQuerySet":
        return self.filter(status=Delivery.Status.PENDING)

    def claimable(self, now: datetime, gone_machines: set[str] | None = None) -> "DeliveryQuerySet":
        """Pending and claimed by nobody, or by a claimer that stopped before sending them:
        its claim is stale, or its machine is gone (a claimer is named machine:pid:...).
        `gone_machines`: machines_gone(), when the caller has just read it."""
        unclaimed = Q(claimed_by="") | Q(claimed_at__lt=now - Delivery.CLAIM_STALE)
        for machine in machines_gone() if gone_machines is None else gone_machines:
            unclaimed |= Q(claimed_by__startswith=f"{machine}:")
        return self.pending().filter(unclaimed)

    def claim(self, ids: Iterable[int], claimer: str, gone_machines: set[str] | None = None) -> list[int]:
        """One conditional UPDATE: the rows of `ids` still claimable become `claimer`'s. The
        ids this UPDATE won, re-read (by claimer and moment): a row another claimer took
        first is not among them."""
        now = timezone.now()
        ids = list(ids)
        self.claimable(now, gone_machines).filter(pk__in=ids).update(claimed_by=claimer, claimed_at=now)
        mine = self.filter(pk__in=ids, status=Delivery.Status.PENDING, claimed_by=claimer, claimed_at=now)
        won = set(mine.values_list("pk", flat=True))
        return [pk for pk in ids if pk in won]

    def start_sending(self, ids: Iterable[int], claimer: str) -> int:
        """The claimer's rows become `sending` as their sends are about to leave: from here a
        claimer that dies leaves them `unknown` (see left_by_others)."""
        return self.pending().filter(pk__in=list(ids), claimed_by=claimer).update(status=Delivery.Status.SENDING)

    def left_by_others(self, claimer: str) -> "DeliveryQuerySet":
        """`sending` rows this claimer does not hold: their sends may have left."""
        return self.filter(status=Delivery.Status.SENDING).exclude(claimed_by=claimer)

    def sendable_again(self) -> "DeliveryQuerySet":
        """Not to members who blocked the bot: Telegram would refuse them again."""
        return self.exclude(error_class=Delivery.ErrorClass.BLOCKED).exclude(member__is_blocked=True)


class Delivery(models.Model):
    """One broadcast to one member: sent at most once."""

    class Status(models.TextChoices):
        PENDING = "pending"
        SENDING = "sending"
        SENT = "sent"
        RETRYING = "retrying"
        FAILED = "failed"
        SKIPPED = "skipped"
        UNKNOWN = "unknown", "unknown (may have arrived)"
        CANCELLED = "cancelled"
        HELD = "held", "held for the A/B winner"

    class ErrorClass(models.TextChoices):
        """queueing.errors' classes, and the member who blocked the bot (never sent to again)."""

        RATE_LIMITED = RATE_LIMITED, "rate limited"
        DEFERRED = DEFERRED, "waiting"
        RETRIABLE = RETRIABLE, "retriable"
        MAYBE_DONE = MAYBE_DONE, "no answer (may have taken effect)"
        PERMANENT = PERMANENT, "permanent"
        BLOCKED = "blocked", "blocked the bot"

    # A claim on a pending row lasts one BroadcastSender._claim (under a second): one this old
    # belongs to a sender that stopped before marking its rows `sending`.
    CLAIM_STALE = timedelta(minutes=1)

    # No index of its own: one_delivery_per_member and the indexes below begin with it (one
    # index fewer to write for each of a million rows). No foreign-key constraints in the
    # database: PostgreSQL checks one per row and key at COMMIT, and those checks were more
    # than half of a million-member fan-out's time. Only the fan-out inserts deliveries, from
    # the members it reads in the same statement, under the broadcast's row lock; deleting a
    # broadcast or a member through Django still deletes its deliveries, and a sender skips a
    # delivery whose member was deleted during the fan-out (BroadcastSender._claim_more).
    broadcast = models.ForeignKey(
        Broadcast, on_delete=models.CASCADE, related_name="deliveries", db_index=False, db_constraint=False
    )
    member = models.ForeignKey(TelegramUser, on_delete=models.CASCADE, related_name="deliveries", db_constraint=False)
    chat_id = models.BigIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    error = models.TextField(blank=True)
    error_class = models.CharField(max_length=16, choices=ErrorClass.choices, blank=True)
    # db_default: the fan-out's INSERT ... SELECT leaves it out.
    claimed_by = models.CharField(
        max_length=200,
        blank=True,
        default="",
        db_default="",
        help_text="The sender holding it (host:pid:sender); empty when nobody does.",
    )
    claimed_at = models.DateTimeField(null=True, blank=True)
    message_id = models.BigIntegerField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    # Which message version the member gets (broadcasts.variants), fixed at the fan-out: the
    # arm ('' while held for an A/B winner) and the language ('' for the fallback). Defaults in
    # the database: the fan-out's INSERT ... SELECT names only the columns it fills.
    arm = models.CharField(max_length=1, blank=True, default="", db_default="")
    language = models.CharField(max_length=16, blank=True, default="", db_default="")

    # The member pressed this message's Stop button (broadcasts.unsubscribe).
    unsubscribed_at = models.DateTimeField(null=True, blank=True)

    objects = DeliveryQuerySet.as_manager()

    class Meta:
        verbose_name_plural = "deliveries"
        constraints = [models.UniqueConstraint(fields=["broadcast", "member"], name="one_delivery_per_member")]
        indexes = [
            # Counts by status, and the sender's claims: the pending rows in id order from
            # where its walk is (a range of this index at any point of a million rows).
            models.Index(fields=["broadcast", "status", "id"], name="delivery_by_status_and_id"),
            # The admin's list of a broadcast's deliveries, newest first: 100 rows read, not all.
            models.Index(fields=["broadcast", "id"], name="delivery_of_broadcast_by_id"),
            # Progress's send rate: the last seconds' sends, not every sent row.
            models.Index(fields=["sent_at"], condition=Q(status="sent"), name="delivery_sent_recently"),
            # The results' unsubscribed members: the few who pressed Stop, not every row.
            models.Index(
                fields=["broadcast"], condition=Q(unsubscribed_at__isnull=False), name="delivery_unsubscribed"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.broadcast} → {self.member} ({self.status})"


class DeliverySummary(models.Model):
    """What is kept of a broadcast's deliveries once prune_deliveries deleted their rows: how
    many there were per arm, language and status, how many of those members had clicked a
    button and how many had blocked the bot by then. Broadcast.counts() and the A/B results
    read these instead of the rows."""

    broadcast = models.ForeignKey(Broadcast, on_delete=models.CASCADE, related_name="delivery_summaries")
    arm = models.CharField(max_length=1, blank=True)
    language = models.CharField(max_length=16, blank=True)
    status = models.CharField(max_length=16, choices=Delivery.Status.choices)
    count = models.PositiveIntegerField()
    clicked = models.PositiveIntegerField(default=0, help_text="Of these, members who clicked a button.")
    blocked = models.PositiveIntegerField(default=0, help_text="Of these, members who had blocked the bot.")
    blocked_after = models.PositiveIntegerField(default=0, help_text="Of these, blocked the bot after their message.")
    unsubscribed = models.PositiveIntegerField(default=0, help_text="Of these, pressed Stop or blocked after.")
    presses = models.PositiveIntegerField(default=0, help_text="Every click of these members on the buttons.")
    pruned_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name_plural = "delivery summaries"
        constraints = [
            models.UniqueConstraint(
                fields=["broadcast", "arm", "language", "status"], name="one_summary_per_arm_language_status"
            )
        ]

    def __str__(self) -> str:
        return f"{self.broadcast} {self.arm or '-'} {self.language or 'fallback'} {self.status}: {self.count}"


class DeliveryCountQuerySet(models.QuerySet):
    """Sums of the kept counts (broadcasts.delivery_counts); keys with none left out."""

    def per_status(self) -> dict[str, int]:
        rows = self.values_list("status").annotate(total=models.Sum("n")).order_by()
        return {status: n for status, n in rows if n}

    def per_key(self) -> dict[tuple[str, str, str], int]:
        """Per (arm, language, status)."""
        rows = self.values_list("arm", "language", "status").annotate(total=models.Sum("n")).order_by()
        return {(arm, language, status): n for arm, language, status, n in rows if n}

    def sent_per_minute(self) -> dict[datetime, int]:
        """Deliveries sent per minute, in UTC."""
        sent = self.filter(status=Delivery.Status.SENT, sent_minute__isnull=False)
        return {
            minute: n for minute, n in sent.values_list("sent_minute").annotate(total=models.Sum("n")).order_by() if n
        }


class DeliveryCount(models.Model):
    """Deliveries per broadcast, arm, language, status and, for sent ones, the minute they were
    sent, as changes to add up: the database's triggers on Delivery (migration 0018) write
    +n/-n rows with every INSERT, UPDATE and DELETE, and broadcasts.delivery_counts folds
    them. Pages read these few rows instead of counting a million deliveries."""

    # No constraint: deleting a broadcast deletes its deliveries, whose triggers write rows for
    # it after Django collected these; they bring its sums to zero, which the fold drops.
    broadcast = models.ForeignKey(Broadcast, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+")
    arm = models.CharField(max_length=1, blank=True)
    language = models.CharField(max_length=16, blank=True)
    status = models.CharField(max_length=16, choices=Delivery.Status.choices)
    sent_minute = models.DateTimeField(null=True, blank=True, help_text="Of sent deliveries (UTC); else empty.")
    n = models.BigIntegerField()
    folded = models.BooleanField(default=False, help_text="The sum of earlier rows; else one statement's change.")

    objects = DeliveryCountQuerySet.as_manager()

    class Meta:
        indexes = [
            models.Index(fields=["broadcast"], condition=Q(folded=False), name="delivery_count_to_fold"),
        ]

    def __str__(self) -> str:
        return f"{self.broadcast_id} {self.arm or '-'} {self.language or 'fallback'} {self.status}: {self.n:+d}"


class Click(models.Model):
    """A member's clicks on one URL button of one delivery, counted by the platform's own
    redirect (broadcasts.clicks): one row per delivery and button, however often it is pressed."""

    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="clicks")
    # The delivery's, copied when the first click is recorded: a broadcast's clicks per arm
    # and language are read on their own, not joined to its million deliveries.
    broadcast = models.ForeignKey(Broadcast, on_delete=models.CASCADE, related_name="clicks")
    arm = models.CharField(max_length=1, blank=True)
    language = models.CharField(max_length=16, blank=True)
    button = models.PositiveSmallIntegerField(help_text="The button's position among its version's URL buttons.")
    count = models.PositiveIntegerField(default=1)
    first_at = models.DateTimeField()
    last_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["delivery", "button"], name="one_click_row_per_button")]

    def __str__(self) -> str:
        return f"{self.delivery} button {self.button}: {self.count}"

    @classmethod
    def record(cls, delivery_id: int, button: int) -> None:
        """One indexed write whatever the history: the first click inserts, later ones count."""
        table = connection.ops.quote_name(cls._meta.db_table)
        deliveries = connection.ops.quote_name(Delivery._meta.db_table)
        now = timezone.now()
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {table} (delivery_id, broadcast_id, arm, language, button, count, first_at, last_at)"
                f" SELECT id, broadcast_id, arm, language, %s, 1, %s, %s FROM {deliveries} WHERE id = %s"
                f" ON CONFLICT (delivery_id, button)"
                f" DO UPDATE SET count = {table}.count + 1, last_at = excluded.last_at",
                [button, now, now, delivery_id],
            )


class MessageVersion(models.Model):
    """Another version of a broadcast's message: an A/B arm (B-D; A is the broadcast's own
    message), a language, or both. A member gets the version of their arm in their language,
    else their arm's fallback ('' language); arm A's fallback is the broadcast itself."""

    ARMS = "ABCD"

    broadcast = models.ForeignKey(Broadcast, on_delete=models.CASCADE, related_name="versions")
    arm = models.CharField(max_length=1, choices=[(arm, arm) for arm in ARMS], default="A")
    language = models.CharField(
        max_length=16, blank=True, help_text="A Telegram language code (fr, pt-br); empty for the fallback."
    )
    text = models.TextField(help_text="Placeholders as in the broadcast's text.")
    buttons = models.JSONField(default=list, blank=True, help_text="Empty: the broadcast's buttons.")
    photo = models.FileField(upload_to="broadcasts/", blank=True, help_text="Empty: the broadcast's attachment.")
    stop_button_text = models.CharField(
        max_length=64, blank=True, help_text="The Stop button's text in this version; empty: its fallback's."
    )

    class Meta:
        ordering = ["arm", "language"]
        constraints = [
            models.UniqueConstraint(fields=["broadcast", "arm", "language"], name="one_version_per_arm_and_language")
        ]

    def __str__(self) -> str:
        return f"{self.broadcast} {self.arm} {self.language or 'fallback'}"

    def save(self, *args, **kwargs) -> None:
        self.language = self.language.strip().lower()
        super().save(*args, **kwargs)
