import json

from django.core.management.base import BaseCommand, CommandError

from broadcasts.models import Broadcast
from broadcasts.results import results


class Command(BaseCommand):
    help = "A broadcast's state and delivery counts."

    def add_arguments(self, parser):
        parser.add_argument("id", type=int, help="The broadcast's id (send_broadcast prints it).")
        parser.add_argument("--json", action="store_true", help="Print JSON instead of text.")

    def handle(self, *args, **options):
        broadcast = Broadcast.objects.filter(pk=options["id"]).first()
        if broadcast is None:
            raise CommandError(f"No broadcast with id {options['id']}.")
        progress = broadcast.progress()
        figures = results(broadcast)
        if options["json"]:
            # The totals at the top (clicks: members who clicked), per arm and language beside.
            self.stdout.write(json.dumps({"title": str(broadcast), **progress, **figures}))
            return
        counts = progress["counts"]
        self.stdout.write(f"{broadcast} ({broadcast.get_audience_display()}): {broadcast.status}")
        self.stdout.write(f"{progress['finished']} of {counts['total']} finished ({progress['percent']}%)")
        self.stdout.write("  ".join(f"{status} {n}" for status, n in counts.items() if status != "total"))
        if counts["unknown"]:
            self.stdout.write(
                self.style.ERROR(
                    f"{counts['unknown']} unknown: Telegram may or may not have delivered them. "
                    "An operator can resend them in the admin (Resend to unknown); some may get it twice."
                )
            )
        if progress["stall_reason"]:
            until = f" (until {progress['stalled_until']})" if progress["stalled_until"] else ""
            self.stdout.write(self.style.WARNING(f"Stalled: {progress['stall_reason']}{until}"))
        if broadcast.status == Broadcast.Status.SENDING:
            eta = progress["eta_seconds"]
            left = f"{eta} s left" if eta is not None else "time left unknown"
            self.stdout.write(f"{progress['rate']} messages/s; {left}")
        if figures["sent"]:
            rate = f"{figures['click_through']}%" if figures["click_through"] is not None else "-"
            self.stdout.write(
                f"Clicked: {figures['clicks']} members ({figures['presses']} clicks, {rate} of those sent); "
                f"unsubscribed: {figures['unsubscribed']} ({figures['blocked_after']} blocked the bot after it)"
            )
        if broadcast.send_window:
            self.stdout.write(f"Send window: {broadcast.send_window.describe()}")
        if broadcast.awaits_approval and broadcast.is_editable:
            self.stdout.write(self.style.WARNING("Awaiting approval (BROADCAST_APPROVAL)."))
        if broadcast.scheduled_at and broadcast.status == Broadcast.Status.SCHEDULED:
            self.stdout.write(f"Scheduled for {broadcast.scheduled_at.isoformat()}")
