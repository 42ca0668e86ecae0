"""Parts of the download job that need no cluster: the per-process extractor list, the sweep of
stale folders as a duty of the downloads cluster, a download following an operator's retries,
and a full disk."""

import errno
import os
import time
from pathlib import Path

import pytest
import yt_dlp

from bots.downloads import folders, messages, ytdlp
from bots.models import Bot, Download, TelegramUser
from queueing.housekeeping import Housekeeper
from queueing.models import JobRecord
from queueing.queues import get_queue
from tests.fake_telegram import make_token
from tests.media_server import MediaServer, full_disk


def test_the_extractor_list_built_once_is_yt_dlps_own():
    options = {"quiet": True, "no_warnings": True}

    ours = ytdlp.ProjectYoutubeDL(options)._ies
    theirs = yt_dlp.YoutubeDL(options)._ies

    assert list(ours) == list(theirs)
    assert all(
        ours[key] is theirs[key] if isinstance(theirs[key], type) else type(ours[key]) is type(theirs[key])
        for key in theirs
    )


def test_the_sweep_removes_only_folders_older_than_the_queue_timeout(settings, tmp_path):
    settings.DOWNLOADS_ROOT = tmp_path
    stale, fresh = tmp_path / "stale", tmp_path / "fresh"
    for folder in (stale, fresh):
        folder.mkdir()
        (folder / "clip.mp4.part").write_bytes(b"half")
    long_ago = time.time() - get_queue("downloads").timeout - 1
    os.utime(stale, (long_ago, long_ago))

    assert folders.sweep_stale_folders("downloads") == 1

    assert not stale.exists() and fresh.exists()


def test_the_sweep_is_a_duty_of_the_downloads_cluster_only():
    def duties(queue: str) -> set:
        return {duty for _, duty in Housekeeper(queue).duties}

    assert folders.sweep_stale_folders in duties("downloads")
    assert folders.sweep_stale_folders not in duties("telegram")


@pytest.mark.django_db
def test_a_download_follows_its_job_through_retries_of_retries():
    bot = Bot.objects.create(token=make_token(7400001))
    member = TelegramUser.objects.create(bot=bot, telegram_id=801)

    def job(**fields) -> JobRecord:
        return JobRecord.objects.create(queue="downloads", kind="bots.tasks.download_media", **fields)

    original = job(status=JobRecord.Status.FAILED)
    download = Download.objects.create(
        bot=bot, member=member, url="https://a.example/", chat_id=801, job=original, status="failed", error="404"
    )
    assert not download.follow_retries()
    cancelled = job(status=JobRecord.Status.CANCELLED, retry_of=original)
    newest = job(status=JobRecord.Status.RUNNING, retry_of=cancelled)

    assert download.follow_retries()

    download.refresh_from_db()
    assert (download.job_id, download.status, download.error, download.finished_at) == (
        newest.pk,
        Download.Status.WAITING,
        "",
        None,
    )
    assert list(Download.objects.active()) == [download]


def test_a_full_disk_ends_the_download_for_good_and_says_so(settings, tmp_path):
    settings.DOWNLOADS_ALLOW_PRIVATE_HOSTS = True
    folder = tmp_path / "work"
    folder.mkdir()
    server = MediaServer().start()
    server.on_request = full_disk(tmp_path, "clip.mp4.part")
    try:
        with pytest.raises(folders.DiskFull) as caught:
            ytdlp.fetch(server.url("/clip.mp4"), folder, lambda status: None)
    finally:
        server.stop()

    assert "No space left on device" in str(caught.value)
    assert caught.value.user_message == messages.DISK_FULL
    assert (folder / "clip.mp4.part").is_symlink(), "the write went where the test sent it"


def test_no_room_for_a_download_folder_is_a_full_disk(settings, tmp_path, monkeypatch):
    settings.DOWNLOADS_ROOT = tmp_path

    def no_room(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))

    monkeypatch.setattr(Path, "mkdir", no_room)

    with pytest.raises(folders.DiskFull), folders.temporary_folder():
        pass
