from broadcasts import controls
from broadcasts.management.commands._control import ControlCommand


class Command(ControlCommand):
    help = (
        "Pause a sending broadcast: sending stops before its next send; the rest waits, pending, for resume_broadcast. "
        "Exactly what the admin's button does."
    )
    control = staticmethod(controls.pause)
