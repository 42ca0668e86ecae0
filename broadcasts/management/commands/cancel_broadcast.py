from broadcasts import controls
from broadcasts.management.commands._control import ControlCommand


class Command(ControlCommand):
    help = (
        "Cancel a broadcast that has not finished: deliveries still waiting are never sent. "
        "Exactly what the admin's button does."
    )
    control = staticmethod(controls.cancel)
