import sys

from django.core.management.base import BaseCommand, CommandError, CommandParser

from queueing.models import JobRecord
from queueing.queues import broker_for, get_queue


class Command(BaseCommand):
    help = (
        "Cancels every waiting (queued or retrying) job of a queue and empties its broker queue. Running jobs finish."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("queue", help="The queue to clear.")
        parser.add_argument("--yes", action="store_true", help="Do not ask for confirmation.")

    def handle(self, *args, queue: str, yes: bool, **options) -> None:
        try:
            get_queue(queue)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        waiting = JobRecord.objects.in_queue(queue).waiting()
        if not yes and not self._confirmed(queue, waiting.count()):
            self.stdout.write("Nothing was changed.")
            return
        # Purged first: a job enqueued in between is then cancelled with a task left in the broker,
        # which no worker will run, rather than left queued with its task gone.
        broker_for(queue).purge_queue()
        cancelled = waiting.cancel()
        self.stdout.write(f"Cancelled {cancelled} waiting jobs of queue {queue} and emptied its broker queue.")

    def _confirmed(self, queue: str, waiting: int) -> bool:
        if not sys.stdin.isatty():
            raise CommandError("Refusing to clear a queue without a terminal to confirm on; pass --yes to do it.")
        question = f"Cancel {waiting} waiting jobs of queue {queue} and empty its broker queue? [y/N] "
        self.stdout.write(question, ending="")
        self.stdout.flush()
        return input().strip().lower() in ("y", "yes")
