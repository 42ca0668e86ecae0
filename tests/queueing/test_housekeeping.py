"""The housekeeping loop of every qcluster: duties at their intervals, failures reported once."""

import logging

from queueing import housekeeping
from queueing.housekeeping import Housekeeper
from queueing.registry import Registry


def test_a_failing_duty_is_logged_once_until_it_works_again(db, monkeypatch, caplog):
    database_up = False

    def duty(queue: str) -> int:
        if not database_up:
            raise ConnectionError("database is down")
        return 0

    monkeypatch.setattr(housekeeping, "duties", Registry("housekeeping duty"))
    housekeeping.register_duty("default", 0.0, duty)
    keeper = Housekeeper("default")

    with caplog.at_level(logging.INFO, logger="queueing.housekeeping"):
        for _ in range(5):
            keeper.tick()
        database_up = True
        keeper.tick()
        keeper.tick()

    about_duty = [record for record in caplog.records if record.getMessage().startswith("Housekeeping duty ")]
    messages = [record.getMessage() for record in about_duty]
    assert messages == [
        "Housekeeping duty for queue default failed; retrying quietly until it works",
        "Housekeeping duty for queue default works again",
    ]
    assert about_duty[0].exc_info[0] is ConnectionError


def test_registered_duties_run_only_on_their_cluster(monkeypatch):
    def dispatch(queue: str) -> int:
        return 0

    monkeypatch.setattr(housekeeping, "duties", Registry("housekeeping duty"))
    housekeeping.register_duty("telegram", 0.05, dispatch)

    assert (0.05, dispatch) in Housekeeper("telegram").duties
    assert dispatch not in {duty for _, duty in Housekeeper("downloads").duties}
    assert Housekeeper("telegram").tick_seconds == 0.05
    assert Housekeeper("downloads").tick_seconds == Housekeeper.TICK
