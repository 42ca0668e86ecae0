from broadcasts import controls
from broadcasts.management.commands._control import ControlCommand


class Command(ControlCommand):
    help = "Resume a paused broadcast: what is left is sent. Exactly what the admin's button does."
    control = staticmethod(controls.resume)
