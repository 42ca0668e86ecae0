"""A broadcast always finishes or says why it cannot.

Crashes cost a job its attempts (a sender, or start_broadcast fanning out), and a job that
spent them all ends while its deliveries still wait, or its fan-out is unfinished. The
telegram cluster's housekeeping looks every RECOVERY_INTERVAL seconds for broadcasts that
are `sending` with no job left to send them:

1. the fan-out is complete and every delivery is final (the last job died before saying
   so): the broadcast is done; an A/B test whose sample is sent waits for its winner
   (broadcasts.variants);
2. its jobs failed REPEATED_FAILURES times for reasons other than a crash: it is paused,
   with the last reason, for an operator to look at;
3. otherwise start_broadcast is enqueued again: it carries on the fan-out and enqueues a
   sender for the deliveries still waiting."""

import logging
from datetime import timedelta

from django.utils import timezone

from broadcasts import variants
from broadcasts.models import Broadcast
from broadcasts.sending import finish_if_complete
from broadcasts.tasks import send_deliveries, start_broadcast
from queueing import history
from queueing.locks import try_lock

logger = logging.getLogger(__name__)

RECOVERY_INTERVAL = 10.0
# A job that has just ended may be followed by the next one at once (a sender carrying on).
SETTLE = timedelta(seconds=10)
REPEATED_FAILURES = 3


def resume_stranded(_cluster: str = "telegram") -> int:
    """Returns how many broadcasts it finished, paused or resumed."""
    with try_lock("broadcasts:recovery") as held:
        if not held:
            return 0
        settled = timezone.now() - SETTLE
        sending = list(Broadcast.objects.filter(status=Broadcast.Status.SENDING, started_at__lt=settled))
        if not sending:
            return 0
        busy = history.busy_with(start_broadcast, send_deliveries, since=settled)
        return sum(_recover(broadcast) for broadcast in sending if broadcast.pk not in busy)


def _recover(broadcast: Broadcast) -> bool:
    if finish_if_complete(broadcast):
        return True
    if broadcast.fan_out_after is None and variants.waiting_for_winner(broadcast):
        return False
    failures = history.failures(start_broadcast, send_deliveries, about=broadcast.pk)
    if failures.count() >= REPEATED_FAILURES:
        last = failures.first()
        reason = f"Stopped after {REPEATED_FAILURES} failed jobs; the last: {last.last_error}"[:300]
        if Broadcast.objects.filter(pk=broadcast.pk, status=Broadcast.Status.SENDING).update(
            status=Broadcast.Status.PAUSED, stall_reason=reason, stalled_until=None
        ):
            logger.warning("Broadcast %s paused: %s", broadcast.pk, reason)
        return True
    logger.warning("Broadcast %s had no job left to send it: sending the rest again", broadcast.pk)
    start_broadcast.enqueue_with(args=[broadcast.pk], label=f"broadcast {broadcast.pk}, resumed by housekeeping")
    return True
