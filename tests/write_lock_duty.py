"""A telegram housekeeping duty that keeps a write transaction open most of the time, so a
test can stop a cluster while its main thread is inside one. tests/settings.py installs it
only in a process whose environment sets TEST_DUTY_HOLDS_WRITE_LOCK."""

import time

from django.apps import AppConfig
from django.db import transaction


def hold_a_write_transaction(_queue: str) -> None:
    from queueing.models import ClusterHeartbeat

    with transaction.atomic():
        # A write: on SQLite the transaction holds the database's write lock from BEGIN IMMEDIATE.
        ClusterHeartbeat.objects.filter(pk=-1).update(workers=0)
        time.sleep(0.5)


class WriteLockDuty(AppConfig):
    name = "tests"
    label = "tests_write_lock_duty"

    def ready(self) -> None:
        from queueing.housekeeping import register_duty

        register_duty("telegram", 0.01, hold_a_write_transaction)
