"""What pause_broadcast, resume_broadcast and cancel_broadcast share: the broadcast's id,
--user for the admin's history, and broadcasts.controls doing what the admin's buttons do."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from broadcasts import controls
from broadcasts.models import Broadcast


def add_user_argument(parser) -> None:
    parser.add_argument(
        "--user",
        metavar="USERNAME",
        help=f"Who is doing this, for the broadcast's history in the admin (default: {controls.COMMAND_LINE}).",
    )


def history_user(options: dict):
    """The --user named, or the command-line user."""
    name = options.get("user")
    if not name:
        return controls.command_line_user()
    user = get_user_model().objects.filter(username=name).first()
    if user is None:
        raise CommandError(f"No user named {name!r}.")
    return user


class ControlCommand(BaseCommand):
    control = None  # staticmethod(one of broadcasts.controls), called with (broadcast, user)

    def add_arguments(self, parser):
        parser.add_argument("id", type=int, help="The broadcast's id (send_broadcast prints it).")
        add_user_argument(parser)

    def handle(self, *args, **options):
        broadcast = Broadcast.objects.filter(pk=options["id"]).first()
        if broadcast is None:
            raise CommandError(f"No broadcast with id {options['id']}.")
        try:
            message = self.control(broadcast, history_user(options))
        except controls.Refused as refused:
            raise CommandError(str(refused)) from None
        self.stdout.write(self.style.SUCCESS(f"{broadcast}: {message}"))
