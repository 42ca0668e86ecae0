"""Circuits: a service that stopped answering (Telegram, for one bot), as every process sees it.

An outage is not a failure: work that needs the service waits for it without spending
attempts, and one probe at a time finds out whether it is back.

1. A caller that could not reach the service calls `trip(key, reason)`: the circuit opens,
   and the first probe is due PROBE_FIRST seconds later. A failed probe doubles the wait,
   up to settings.TELEGRAM_OUTAGE_PROBE_MAX.
2. Before using the service a caller asks `wait_for(key)`: 0 when the circuit is closed or
   when the caller has just become the probe; otherwise the seconds to wait.
3. The first success calls `reset(key)` and the circuit closes for everyone.

The outage is logged once when it starts, at most once a minute while it lasts, and once
when it ends."""

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from queueing.models import Circuit

logger = logging.getLogger(__name__)

PROBE_FIRST = 1.0
# A probe that never reported back (its worker died) frees the probe after this long.
PROBE_TIMEOUT = timedelta(seconds=60)
# While another process probes, ask again this soon.
PROBE_BUSY_WAIT = 1.0
LOG_EVERY = 60.0

# Keys this process has seen open: only those are reset on success, so a healthy service
# costs no write per call.
_seen_open: set[str] = set()
# Keys this process probes: its calls go ahead until the probe's outcome is known.
_probing: set[str] = set()
_last_logged: dict[str, float] = {}


@dataclass(frozen=True)
class Outage:
    key: str
    since: datetime
    reason: str
    wait: float

    def describe(self) -> str:
        return f"unreachable since {timezone.localtime(self.since):%H:%M:%S} ({self.reason})"


def wait_for(key: str) -> Outage | None:
    """None: go ahead (closed, or this caller is the probe). Otherwise the outage, with how
    long to wait before asking again."""
    circuit = Circuit.objects.filter(key=key).first()
    if circuit is None:
        return None
    _seen_open.add(key)
    if key in _probing:
        return None
    now = timezone.now()
    if now < circuit.probe_at:
        wait = (circuit.probe_at - now).total_seconds()
    else:
        free = Q(probing_until__isnull=True) | Q(probing_until__lt=now)
        if Circuit.objects.filter(free, key=key).update(probing_until=now + PROBE_TIMEOUT):
            _probing.add(key)
            return None
        wait = PROBE_BUSY_WAIT
    return Outage(key, circuit.opened_at, circuit.reason, wait)


def trip(key: str, reason: str) -> Outage:
    """The service could not be reached: open the circuit, or keep it open; a failed probe
    puts the next one further off."""
    now = timezone.now()
    _seen_open.add(key)
    _probing.discard(key)
    for _ in range(2):
        try:
            with transaction.atomic():
                circuit, created = Circuit.objects.select_for_update().get_or_create(
                    key=key,
                    defaults={"opened_at": now, "probe_at": now + timedelta(seconds=PROBE_FIRST), "reason": reason},
                )
                if not created:
                    _record_failure(circuit, now, reason)
            break
        except IntegrityError:  # opened by another process at the same moment
            continue
    if created:
        logger.warning("%s is unreachable (%s): work waits for it without spending attempts", key, reason)
        _last_logged[key] = time.monotonic()
    elif time.monotonic() - _last_logged.get(key, 0.0) >= LOG_EVERY:
        _last_logged[key] = time.monotonic()
        logger.warning(
            "%s still unreachable after %.0f s (%s failures; %s)",
            key,
            (now - circuit.opened_at).total_seconds(),
            circuit.failures,
            reason,
        )
    return Outage(key, circuit.opened_at, circuit.reason, max((circuit.probe_at - now).total_seconds(), 0.0))


def _record_failure(circuit: Circuit, now: datetime, reason: str) -> None:
    circuit.failures += 1
    circuit.reason = reason[:300]
    if circuit.probing_until is not None:
        # The probe failed: wait longer before the next one. Other callers' failures (sends
        # already on their way when the circuit opened) leave the next probe where it is.
        waited = (circuit.probe_at - circuit.opened_at).total_seconds()
        backoff = min(settings.TELEGRAM_OUTAGE_PROBE_MAX, max(PROBE_FIRST, waited) * 2)
        circuit.probe_at, circuit.probing_until = now + timedelta(seconds=backoff), None
    circuit.save(update_fields=["failures", "reason", "probe_at", "probing_until"])


def reset(key: str) -> None:
    """A call went through: close the circuit if this process has seen it open."""
    if key not in _seen_open:
        return
    _seen_open.discard(key)
    _probing.discard(key)
    circuit = Circuit.objects.filter(key=key).first()
    if circuit is not None and Circuit.objects.filter(key=key).delete()[0]:
        _last_logged.pop(key, None)
        logger.warning(
            "%s is reachable again after %.0f s (%s failures)",
            key,
            (timezone.now() - circuit.opened_at).total_seconds(),
            circuit.failures,
        )


def open_circuits() -> list[Circuit]:
    return list(Circuit.objects.order_by("opened_at"))
