"""How long sending stood still after each kill of a fault test, for the closing notes:
`pytest tests/e2e -s | grep STALL`. Printed, never asserted (no timed assertions)."""

import time


def killed_now() -> float:
    """The moment of a kill, on the clock of the fake Telegram's `received_at`."""
    return time.time()


def report_stalls(fake, kills: list[float], fault: str, method: str = "sendMessage") -> None:
    """One line per kill: seconds from the kill to the next `method` call the fake received."""
    received = sorted(call.received_at for call in fake.calls(method))
    for number, killed_at in enumerate(kills, 1):
        after = next((at - killed_at for at in received if at > killed_at), None)
        stall = "nothing sent after it" if after is None else f"{after:.1f} s"
        print(f"\nSTALL | {fault} | kill {number} of {len(kills)} | next {method} after {stall}")
