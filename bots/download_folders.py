"""Every download works in a folder of its own under DOWNLOADS_ROOT, removed when it ends; the
downloads cluster sweeps away the folders of downloads that never ended (a killed worker).
Kept apart from bots.downloads so that registering the sweep does not import yt-dlp."""

import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings

from queueing.queues import get_queue

# How often each downloads cluster sweeps (it also sweeps as it starts).
SWEEP_INTERVAL = 60.0


@contextmanager
def temporary_folder() -> Iterator[Path]:
    """A fresh folder under DOWNLOADS_ROOT, removed whatever happens (a killed worker's is
    removed by sweep_stale_folders)."""
    folder = Path(settings.DOWNLOADS_ROOT) / uuid.uuid4().hex
    folder.mkdir(parents=True)
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
