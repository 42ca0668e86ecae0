"""What an operator does to a broadcast, from the admin or the command line: the same checks,
the same effects, and a line in the admin's history (LogEntry) with who and when.

Each control returns what to tell the operator, or raises Refused saying why nothing
happened. Who may do what is the caller's to check (the admin checks the user's
permissions; the command line is trusted like anything else run on the server); the
history names the user the caller gives, or COMMAND_LINE for a command run without --user."""

from django.conf import settings
from django.contrib.admin.models import ADDITION, CHANGE, LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.db import transaction
from django.utils import timezone

from broadcasts import tasks
from broadcasts.models import Broadcast
from broadcasts.tasks import start_broadcast
from queueing import history

SEND_PERMISSION = "broadcasts.send_broadcast"
# The history's user for commands run without --user; it cannot log in.
COMMAND_LINE = "command-line"


class Refused(Exception):
    """Nothing was done; the message says why, worded for the operator."""


def command_line_user():
    user, _ = get_user_model().objects.get_or_create(
        username=COMMAND_LINE, defaults={"is_active": False, "password": make_password(None)}
    )
    return user


def record(user, broadcast: Broadcast, message: str, flag: int = CHANGE) -> None:
    """A line in the broadcast's admin history."""
    LogEntry.objects.log_actions(user.pk, [broadcast], flag, change_message=message, single_object=True)


def composed(broadcast: Broadcast, user) -> None:
    """The admin records its own additions and changes; the command line records with this."""
    record(user, broadcast, "Composed on the command line.", ADDITION)


def pause(broadcast: Broadcast, user) -> str:
    if not broadcast.pause():
        raise Refused(f"Only a sending broadcast can be paused; this one is {broadcast.status}.")
    record(user, broadcast, "Paused.")
    return "Paused: sending stops before its next send."


def resume(broadcast: Broadcast, user) -> str:
    if not broadcast.resume():
        raise Refused(f"Only a paused broadcast can be resumed; this one is {broadcast.status}.")
    start_broadcast.enqueue_with(args=[broadcast.pk], label=f"broadcast {broadcast.pk}: resume")
    record(user, broadcast, "Resumed.")
    return "Resumed."


def cancel(broadcast: Broadcast, user) -> str:
    cancelled = broadcast.cancel()
    if cancelled is None:
        raise Refused(f"This broadcast is {broadcast.status} already.")
    record(user, broadcast, f"Cancelled; {cancelled} waiting deliveries not sent.")
    return f"Cancelled; {cancelled} waiting deliveries will not be sent."


def send_winner(broadcast: Broadcast, user) -> str:
    """An A/B test's best arm so far, to the rest now, without waiting for the test's time."""
    released = tasks.send_winner(broadcast)
    if released is None:
        raise Refused("A winner was chosen already, or the broadcast is over.")
    record(user, broadcast, f"Sent arm {broadcast.ab_winner}, the A/B winner, to {released} more members.")
    return f"Arm {broadcast.ab_winner} won; sending it to {released} more members."


def retry_failed(broadcast: Broadcast, user) -> str:
    retried = broadcast.retry_failed()
    if not retried:
        raise Refused("No failed delivery to retry (members who blocked the bot are not retried).")
    _carry_on(broadcast, "retry failed")
    record(user, broadcast, f"Retried {retried} failed deliveries.")
    return f"Retrying {retried} failed deliveries."


def resend_unknown(broadcast: Broadcast, user) -> int:
    """How many unknown deliveries go out again (0 records nothing)."""
    again = broadcast.resend_unknown()
    if again:
        _carry_on(broadcast, "resend unknown")
        record(user, broadcast, f"Resent {again} unknown deliveries.")
    return again


def _carry_on(broadcast: Broadcast, why: str) -> None:
    """Deliveries sent again: a sending broadcast needs start_broadcast to enqueue its sender;
    a paused one gets them when it is resumed."""
    if broadcast.status == Broadcast.Status.SENDING:
        start_broadcast.enqueue_with(args=[broadcast.pk], label=f"broadcast {broadcast.pk}: {why}")


# -- approval, sending and scheduling ---------------------------------------------------------


def approval_refusal(broadcast: Broadcast) -> str | None:
    """Why it may not be sent or scheduled yet for want of approval; None when it may."""
    if not broadcast.awaits_approval:
        return None
    return (
        "It needs approval first (BROADCAST_APPROVAL is on): another operator who may send "
        "broadcasts approves it on its preview page."
    )


def approver_refusal(broadcast: Broadcast, user) -> str | None:
    """Why `user` may not approve it; None when they may."""
    if not settings.BROADCAST_APPROVAL:
        return "Approval is off (BROADCAST_APPROVAL): broadcasts are sent without it."
    if not user.is_active or not user.has_perm(SEND_PERMISSION):
        return f"{user} may not send broadcasts, so may not approve them."
    if user.pk in (broadcast.created_by_id, broadcast.edited_by_id):
        return "Another operator approves it: not the one who wrote or last edited it."
    if broadcast.approved_by_id is not None:
        return f"It was approved already, by {broadcast.approved_by}."
    if not broadcast.is_editable:
        return f"It is {broadcast.status}: there is nothing left to approve."
    return None


def approve(broadcast: Broadcast, user) -> str:
    refused = approver_refusal(broadcast, user)
    if refused:
        raise Refused(refused)
    if not broadcast.approve(user):
        raise Refused("Someone else approved or sent it first.")
    record(user, broadcast, "Approved.")
    return f"Approved by {user}: it may be sent or scheduled now."


def send(broadcast: Broadcast, user) -> str:
    """Enqueue start_broadcast once: a second click waits for the first one's row lock, then
    finds its job still waiting or running, or the broadcast already sending."""
    with transaction.atomic():
        locked = Broadcast.objects.select_for_update().get(pk=broadcast.pk)
        if not locked.is_editable or history.pending(start_broadcast, broadcast.pk):
            raise Refused("This broadcast has been started already: not sent again.")
        if refused := approval_refusal(locked):
            raise Refused(f"Not sent: {refused}")
        start_broadcast.enqueue_with(args=[broadcast.pk], label=f"broadcast {broadcast.pk}: start")
        record(user, broadcast, "Sent.")
    return "Sending has started."


def schedule(broadcast: Broadcast, user) -> str:
    if refused := approval_refusal(broadcast):
        raise Refused(f"Not scheduled: {refused}")
    if not broadcast.schedule():
        raise Refused("Only a draft with a schedule time can be scheduled.")
    when = timezone.localtime(broadcast.scheduled_at).strftime("%Y-%m-%d %H:%M %Z")
    record(user, broadcast, f"Scheduled for {when}.")
    return f"Scheduled for {when}."
