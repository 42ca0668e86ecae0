"""Every download works in a folder of its own under DOWNLOADS_ROOT, removed when it ends; the
downloads cluster sweeps away the folders of downloads that never ended (a killed worker).

A full disk ends the download at once (DiskFull, a permanent error), its folder removed with
whatever it had written. Not retried: the job's retries come 5 and 15 seconds later, too soon
for an operator to free space, and each would fetch the same bytes into the same full disk;
the member is told to send the link again later, the operator finds the reason in the job
history and an error in the log (and in Sentry)."""

import errno
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings

from bots.downloads.messages import DISK_FULL
from queueing.errors import PermanentError
from queueing.queues import get_queue

# How often each downloads cluster sweeps (it also sweeps as it starts).
SWEEP_INTERVAL = 60.0


class DiskFull(PermanentError):
    def __init__(self, cause: OSError):
        super().__init__(f"Disk full under {settings.DOWNLOADS_ROOT}: {cause}", user_message=DISK_FULL)


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


@contextmanager
def temporary_folder() -> Iterator[Path]:
    """A fresh folder under DOWNLOADS_ROOT, removed whatever happens (a killed worker's is
    removed by sweep_stale_folders)."""
    folder = Path(settings.DOWNLOADS_ROOT) / uuid.uuid4().hex
    try:
        folder.mkdir(parents=True)
    except OSError as exc:
        if is_disk_full(exc):
            raise DiskFull(exc) from exc
        raise
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def sweep_stale_folders(_cluster: str = "downloads") -> int:
    """Remove folders older than the downloads queue's timeout: no live download can own them.
    A housekeeping duty of the downloads cluster; returns how many were removed."""
    root = Path(settings.DOWNLOADS_ROOT)
    if not root.is_dir():
        return 0
    cutoff = time.time() - get_queue("downloads").timeout
    removed = 0
    for folder in root.iterdir():
        try:
            if folder.is_dir() and folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
        except FileNotFoundError:
            continue
    return removed
