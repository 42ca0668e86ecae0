"""A/B tests and languages: which version of a broadcast's message each member gets, and
which arm of an A/B test wins.

The arms are the broadcast's own message (A) and its message versions of arms B-D; the
languages are those its versions name. At the fan-out one UPDATE (`assign`) gives every
delivery its version:

1. the language: the member's Telegram language_code matched to the broadcast's languages,
   exactly, then by its primary subtag (pt-br -> pt); else '' (the fallback);
2. the arm: from a hash of the broadcast's and the member's ids, so the split is the same
   whenever it is computed, and stored on the delivery, so a pause, a resume or a retry
   never changes it;
3. with a sample (`ab_sample_percent`), members outside it are `held`, without an arm, until
   `decide` picks the winning arm (by `ab_measure`) and gives it to them as pending rows.

The hash is a Weyl sequence in integer SQL (the same on SQLite and PostgreSQL): the member's
id times an irrational fraction of a prime, mod the prime, scaled to the arms. Consecutive
ids spread as evenly as any split can, and a second fraction picks the sample independently."""

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.db.models import Case, Count, Exists, F, Max, OuterRef, Q, Sum, Value, When
from django.db.models.fields.files import FieldFile
from django.db.models.lookups import Exact, LessThan
from django.utils import timezone

from bots.models import TelegramUser
from broadcasts.models import ABMeasure, Broadcast, Delivery, DeliveryCount
from broadcasts.results import of_blocked_members

PRIME = 2_147_483_647  # 2**31 - 1: every product below stays within 63 bits
# The fractional parts of the golden ratio, of sqrt(2) and of sqrt(3), times PRIME: irrational steps.
ARM_STEP = 1_327_217_885
SAMPLE_STEP = 889_516_852
BROADCAST_STEP = 1_572_067_138
# How often housekeeping looks for A/B tests whose winner is due (seconds).
WINNER_INTERVAL = 5.0
SAMPLING = (Delivery.Status.PENDING, Delivery.Status.SENDING, Delivery.Status.RETRYING)


class Split:
    """How a broadcast's audience divides into arms and languages, from its versions' arms
    and languages: those saved, or `versions` (arm, language) pairs not saved yet."""

    def __init__(self, broadcast: Broadcast, versions: Iterable[tuple[str, str]] | None = None):
        self.broadcast = broadcast
        if versions is None:
            versions = broadcast.versions.values_list("arm", "language") if broadcast.pk else []
        pairs = list(versions)
        self.arms = sorted({"A", *(arm for arm, _ in pairs)})
        self.languages = sorted({language for _, language in pairs if language})

    @property
    def has_sample(self) -> bool:
        return len(self.arms) > 1 and self.broadcast.ab_sample_percent > 0

    def _weyl(self, member: str, step: int):
        """A number in [0, PRIME) for each member, evenly spread over consecutive ids."""
        return ((F(member) % PRIME) * step + (self.broadcast.pk or 0) % PRIME * BROADCAST_STEP) % PRIME

    def in_sample(self, member: str):
        """True for the members the A/B test's sample holds (all, without a sample)."""
        if not self.has_sample:
            return Exact(Value(1), Value(1))
        return LessThan(self._weyl(member, SAMPLE_STEP) * 100, self.broadcast.ab_sample_percent * PRIME)

    def arm_of(self, member: str):
        """Each member's arm: ARM_STEP's sequence cut into as many equal parts as there are arms."""
        if len(self.arms) == 1:
            return Value("A")
        part = self._weyl(member, ARM_STEP) * len(self.arms) / PRIME
        return Case(*(When(Exact(part, i), then=Value(arm)) for i, arm in enumerate(self.arms)), default=Value("A"))

    def language_of(self):
        """The broadcast's language that matches each member's language_code, or '' for the fallback."""
        exact = [When(language_code__iexact=code, then=Value(code)) for code in self.languages]
        primary = [When(language_code__istartswith=f"{code}-", then=Value(code)) for code in self.languages]
        return Case(*exact, *primary, default=Value("")) if self.languages else Value("")

    def counts(self, members) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
        """What `assign` makes of these members (TelegramUser rows): the count per arm ('' for
        those held for the winner, last) and per language ('' for the fallback). Before the
        broadcast is saved its id is not known: the arms' counts are then close, not exact."""
        annotated = members.annotate(
            arm=Case(When(self.in_sample("pk"), then=self.arm_of("pk")), default=Value("")),
            language=self.language_of(),
        )
        by_arm = annotated.values_list("arm").annotate(n=Count("pk")).order_by("arm")
        by_language = annotated.values_list("language").annotate(n=Count("pk")).order_by("-n", "language")
        return _held_last(list(by_arm)), list(by_language)


def version_for(broadcast: Broadcast, member: TelegramUser) -> "Version":
    """The version this member gets (arm A's, for a member held for the winner)."""
    split = Split(broadcast)
    arm, language = (
        TelegramUser.objects.filter(pk=member.pk)
        .annotate(arm=split.arm_of("pk"), version_language=split.language_of())
        .values_list("arm", "version_language")
        .get()
    )
    return Versions(broadcast).of(Delivery(arm=arm, language=language))


def _held_last(counts: list[tuple[str, int]]) -> list[tuple[str, int]]:
    return sorted(counts, key=lambda item: (item[0] == "", item[0]))


@dataclass(frozen=True)
class Version:
    """What one arm in one language sends; `attachment` is the version's photo, or the
    broadcast's photo or document; `stop_text` the Stop button's ('' for none)."""

    key: tuple[str, str]
    text: str
    buttons: list[dict]
    attachment: FieldFile | None
    is_photo: bool
    stop_text: str = ""


class Versions:
    """A broadcast's versions, read once: the version each delivery gets."""

    def __init__(self, broadcast: Broadcast):
        attached = broadcast.photo or broadcast.document or None
        own = Version(
            ("A", ""), broadcast.body, broadcast.buttons, attached, bool(broadcast.photo), broadcast.stop_button_text
        )
        self.by_key = {own.key: own}
        # Fallbacks first: a language version without buttons, photo or Stop text takes its arm's.
        for v in sorted(broadcast.versions.all(), key=lambda v: v.language != ""):
            base = self.by_key.get((v.arm, "")) or own
            attachment, is_photo = (v.photo, True) if v.photo else (base.attachment, base.is_photo)
            key = (v.arm, v.language)
            stop_text = v.stop_button_text or base.stop_text
            self.by_key[key] = Version(key, v.text, v.buttons or base.buttons, attachment, is_photo, stop_text)

    def __iter__(self) -> Iterator[Version]:
        return iter(self.by_key.values())

    def of(self, delivery: Delivery) -> Version:
        """The arm's version in the delivery's language, else the arm's fallback."""
        arm = delivery.arm or "A"
        return self.by_key.get((arm, delivery.language)) or self.by_key.get((arm, "")) or self.by_key[("A", "")]


def missing_fallbacks(arm_languages: list[tuple[str, str]]) -> list[str]:
    """Arms (other than A, whose fallback is the broadcast) with versions but no fallback."""
    named = {arm for arm, _ in arm_languages}
    with_fallback = {arm for arm, language in arm_languages if not language}
    return sorted(named - with_fallback - {"A"})


@dataclass(frozen=True)
class ArmResult:
    arm: str
    deliveries: int
    sent: int
    failed: int
    clicked: int  # members who clicked a button at least once
    blocked: int  # members who have blocked the bot since

    @property
    def click_rate(self) -> float | None:
        return self.clicked / self.sent if self.sent else None

    @property
    def block_rate(self) -> float | None:
        reached = self.sent + self.failed
        return self.blocked / reached if reached else None


def results(broadcast: Broadcast) -> list[ArmResult]:
    """Per arm: deliveries (held rows aside), sent, failed, members who clicked, who blocked;
    from the counts the database keeps (broadcasts.delivery_counts), the clicks and the few
    members who blocked the bot, or from the summary of a broadcast whose delivery rows were
    pruned (prune_deliveries)."""
    if broadcast.delivery_summaries.exists():
        kept = (
            broadcast.delivery_summaries.exclude(arm="")
            .values("arm")
            .annotate(
                deliveries=Sum("count"),
                sent=Sum("count", filter=Q(status=Delivery.Status.SENT), default=0),
                failed=Sum("count", filter=Q(status=Delivery.Status.FAILED), default=0),
                clicked=Sum("clicked"),
                blocked=Sum("blocked"),
            )
            .order_by("arm")
        )
        return [ArmResult(**row) for row in kept]
    counted: dict[str, dict[str, int]] = {}
    for (arm, _language, status), n in DeliveryCount.objects.filter(broadcast=broadcast).per_key().items():
        if arm:
            figures = counted.setdefault(arm, dict.fromkeys(("deliveries", "sent", "failed", "clicked", "blocked"), 0))
            figures["deliveries"] += n
            figures["sent"] += n if status == Delivery.Status.SENT else 0
            figures["failed"] += n if status == Delivery.Status.FAILED else 0
    clicked = broadcast.clicks.exclude(arm="").values_list("arm").annotate(n=Count("delivery", distinct=True))
    blocked = (
        of_blocked_members(broadcast)
        .exclude(arm="")
        .filter(member__is_blocked=True)
        .values_list("arm")
        .annotate(n=Count("pk"))
    )
    for field, rows in (("clicked", clicked), ("blocked", blocked)):
        for arm, n in rows.order_by():
            if arm in counted:
                counted[arm][field] = n
    return [ArmResult(arm, **counted[arm]) for arm in sorted(counted)]


def best_arm(broadcast: Broadcast) -> str:
    """The arm that did best by the broadcast's measure; on a tie (or with nothing to go by)
    the earliest arm."""
    scored = []
    for result in results(broadcast):
        if broadcast.ab_measure == ABMeasure.FEWEST_BLOCKS:
            score = None if result.block_rate is None else -result.block_rate
        else:
            score = result.click_rate
        if score is not None:
            scored.append((-score, result.arm))
    return min(scored)[1] if scored else "A"


def winner_due_at(broadcast: Broadcast) -> datetime | None:
    """When the winner is chosen on its own: the wait after the sample's last send. None
    while the sample is still being fanned out or sent."""
    sample = broadcast.deliveries.exclude(status=Delivery.Status.HELD)
    if broadcast.fan_out_after is not None or sample.filter(status__in=SAMPLING).exists():
        return None
    last = sample.aggregate(last=Max("sent_at"))["last"] or broadcast.started_at or timezone.now()
    return last + broadcast.ab_wait


def waiting_for_winner(broadcast: Broadcast) -> bool:
    """The sample is sent and the rest is held for the winner: nothing to send until then."""
    statuses = set(
        broadcast.deliveries.filter(status__in=[*SAMPLING, Delivery.Status.HELD])
        .values_list("status", flat=True)
        .distinct()
    )
    return statuses == {Delivery.Status.HELD}


def decide(broadcast: Broadcast, arm: str | None = None, now: datetime | None = None) -> int | None:
    """Choose the winner (`arm`, or the best by the broadcast's measure) and release the held
    deliveries to it as pending. None when a winner was chosen before or the broadcast is
    over; otherwise how many deliveries were released. The caller enqueues the sending."""
    now = now or timezone.now()
    with transaction.atomic():
        winner = arm or best_arm(broadcast)
        unfinished = [Broadcast.Status.SENDING, Broadcast.Status.PAUSED]
        chosen = Broadcast.objects.filter(pk=broadcast.pk, ab_winner="", status__in=unfinished).update(
            ab_winner=winner, ab_decided_at=now
        )
        if not chosen:
            return None
        broadcast.ab_winner, broadcast.ab_decided_at = winner, now
        return broadcast.deliveries.filter(status=Delivery.Status.HELD).update(
            status=Delivery.Status.PENDING, arm=winner
        )


def due_winners(now: datetime | None = None) -> list[Broadcast]:
    """Sending A/B tests that choose their winner on their own and whose wait is over."""
    now = now or timezone.now()
    waiting = Broadcast.objects.filter(
        status=Broadcast.Status.SENDING, ab_send_winner=True, ab_winner="", ab_sample_percent__gt=0
    ).filter(Exists(Delivery.objects.filter(broadcast=OuterRef("pk"), status=Delivery.Status.HELD)))
    return [b for b in waiting if (due := winner_due_at(b)) is not None and due <= now]


def arm_progress(broadcast: Broadcast) -> list[dict]:
    """Per arm, for the progress page: deliveries, sent, failed, clicked, and rates; then the
    held deliveries, if any. Empty for a broadcast that is no A/B test: without asking the
    deliveries (a million rows, joined to members and clicks, took seconds)."""
    if len(Split(broadcast).arms) == 1:
        return []
    held = (
        DeliveryCount.objects.filter(broadcast=broadcast, status=Delivery.Status.HELD)
        .per_status()
        .get(Delivery.Status.HELD, 0)
    )
    rows = [
        {
            "arm": r.arm,
            "deliveries": r.deliveries,
            "sent": r.sent,
            "failed": r.failed,
            "clicked": r.clicked,
            "blocked": r.blocked,
            "click_rate": _percent(r.click_rate),
            "winner": r.arm == broadcast.ab_winner,
        }
        for r in results(broadcast)
    ]
    if held:
        rows.append({"arm": "", "deliveries": held, "held": True})
    return rows if len(rows) > 1 else []


def _percent(rate: float | None) -> float | None:
    return None if rate is None else round(100 * rate, 1)
