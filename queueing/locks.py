"""Non-blocking named locks shared by every worker, held by a process and released by
the operating system if that process dies, so a killed worker never leaves a lock behind.
PostgreSQL: a session advisory lock. SQLite (one machine by nature): a file lock."""

import fcntl
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings
from django.db import connection


def _key(name: str) -> int:
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


@contextmanager
def _advisory_lock(name: str) -> Iterator[bool]:
    key = _key(name)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [key])
        held = cursor.fetchone()[0]
    try:
        yield held
    finally:
        if held:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [key])


@contextmanager
def _file_lock(name: str) -> Iterator[bool]:
    directory = settings.VAR_DIR / "locks"
    directory.mkdir(exist_ok=True)
    fd = os.open(directory / f"{_key(name) & 0xFFFFFFFFFFFF:x}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def try_lock(name: str):
    """`with try_lock("chat:1:42") as held:` — held is False if another process has it."""
    if connection.vendor == "postgresql":
        return _advisory_lock(name)
    return _file_lock(name)
