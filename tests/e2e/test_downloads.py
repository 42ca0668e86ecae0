"""Members sending links: real `telegram` and `downloads` qclusters, yt-dlp against a media
server on loopback, the fake Telegram receiving the uploads."""

import os
import time
from datetime import timedelta

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.urls import reverse
from django.utils import timezone

from bots.downloads import messages
from bots.models import Download, MediaCache, TelegramUser
from bots.tasks import download_media
from queueing.models import JobRecord
from tests.fake_telegram import make_user, updates
from tests.media_server import MediaServer, full_disk
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture
def media():
    server = MediaServer(slow_seconds=1.5).start()
    yield server
    server.stop()


@pytest.fixture
def root(settings, tmp_path):
    """The downloads root of this test; it must be empty once the test is over."""
    path = tmp_path / "downloads"
    path.mkdir()
    settings.DOWNLOADS_ROOT = path
    yield path
    wait_for(lambda: not any(path.iterdir()), timeout=10, what="the downloads root to be empty")


@pytest.fixture
def start(clusters, root, settings):
    """Start both clusters with the download settings; `start(DOWNLOADS_MAX_BYTES="1000")`."""

    def start_clusters(**overrides: str) -> dict:
        env = {
            "DOWNLOADS_ROOT": str(root),
            "DOWNLOADS_ALLOW_PRIVATE_HOSTS": "1",
            "DOWNLOADS_PROGRESS_SECONDS": "0.4",
            "QUEUE_DOWNLOADS_BACKOFF": "0.3",
            **overrides,
        }
        for name in ("DOWNLOADS_MAX_BYTES", "DOWNLOADS_MAX_WAITING"):
            if name in overrides:
                setattr(settings, name, int(overrides[name]))
        return {queue: clusters.start(queue, **env) for queue in ("telegram", "downloads")}

    return start_clusters


def send(fake, bot, text: str, user_id: int) -> None:
    fake.push_update(bot.token, updates.text_message(bot.token, text, user=make_user(user_id)))


def texts(fake, chat_id: int) -> list[str]:
    return [call.params["text"] for call in fake.calls("sendMessage", chat_id=chat_id)]


def edits(fake, chat_id: int) -> list[str]:
    return [call.params["text"] for call in fake.calls("editMessageText", chat_id=chat_id)]


def download_jobs() -> list[JobRecord]:
    return list(JobRecord.objects.filter(kind=download_media.kind).order_by("pk"))


def finished(job: JobRecord) -> bool:
    job.refresh_from_db()
    return job.is_finished


def test_a_link_comes_back_as_a_video_and_again_from_the_cache(webhook_bot, fake_telegram, media, start):
    start()
    url = media.url("/slow/clip.mp4")

    send(fake_telegram, webhook_bot, f"please get {url}", 601)

    upload = fake_telegram.wait_for_calls(1, method="sendVideo", chat_id=601, timeout=20)[0]
    assert texts(fake_telegram, 601) == ["Downloading…"]
    progress = fake_telegram.calls("sendMessage", chat_id=601)[0].result["message_id"]
    assert any(text.startswith("Downloading… ") and "%" in text for text in edits(fake_telegram, 601))
    assert upload.files[0].filename == "clip.mp4"
    assert upload.files[0].size == len(media.media)
    assert upload.params["caption"] == f"clip\n{url}"
    deleted = fake_telegram.wait_for_calls(1, method="deleteMessage", chat_id=601)[0]
    assert deleted.params["message_id"] == progress
    assert deleted.received_at > upload.received_at
    job = wait_for(lambda: JobRecord.objects.filter(kind=download_media.kind, status="succeeded").first())
    assert job.result["url"] == url and job.result["member"] == 601 and job.result["size"] == len(media.media)
    assert 0 < job.result["download_seconds"] < job.result["seconds"]
    assert 0 < job.result["upload_seconds"] < job.result["seconds"]
    assert url in job.label and "601" in job.label
    requests_before = media.count("/slow/clip.mp4")

    send(fake_telegram, webhook_bot, url, 601)

    again = fake_telegram.wait_for_calls(2, method="sendVideo", chat_id=601)[1]
    assert again.params["video"] == upload.result["video"]["file_id"]
    assert not again.files
    assert media.count("/slow/clip.mp4") == requests_before
    assert len(download_jobs()) == 1
    assert MediaCache.objects.get().file_id == upload.result["video"]["file_id"]


@pytest.mark.parametrize(
    ("path", "user_message", "attempts", "error_class", "technical"),
    [
        ("/missing.mp4", messages.NOT_FOUND, 1, "permanent", "404"),
        ("/page.html", messages.UNSUPPORTED, 1, "permanent", "Unsupported URL"),
        ("/drop.mp4", messages.GAVE_UP, 3, "retriable", "Downloaded 1000 bytes"),
        ("/error.mp4", messages.GAVE_UP, 3, "retriable", "503"),
    ],
)
def test_a_link_that_fails_gets_a_friendly_answer(
    webhook_bot, fake_telegram, media, start, path, user_message, attempts, error_class, technical
):
    start()

    send(fake_telegram, webhook_bot, media.url(path), 602)

    job = wait_for(lambda: (jobs := download_jobs()) and finished(jobs[0]) and jobs[0], what="the download to end")
    assert job.status == "failed"
    assert (job.attempts, job.error_class) == (attempts, error_class)
    assert technical in job.last_error
    assert edits(fake_telegram, 602)[-1] == user_message
    assert technical not in user_message
    if attempts > 1:
        assert messages.RETRYING in edits(fake_telegram, 602)
    assert not fake_telegram.calls("sendVideo")
    assert Download.objects.get().status == Download.Status.FAILED


def test_a_file_over_the_limit_is_refused(webhook_bot, fake_telegram, media, start):
    start(DOWNLOADS_MAX_BYTES="10000")

    send(fake_telegram, webhook_bot, media.url("/clip.mp4"), 603)

    job = wait_for(lambda: (jobs := download_jobs()) and finished(jobs[0]) and jobs[0], what="the download to end")
    assert (job.status, job.attempts, job.error_class) == ("failed", 1, "permanent")
    assert "10000 byte limit" in job.last_error
    assert edits(fake_telegram, 603)[-1] == messages.too_large()
    assert not fake_telegram.calls("sendVideo")


def test_a_full_disk_fails_the_download_at_once_with_a_reason_and_leaves_nothing(
    webhook_bot, fake_telegram, media, start, root
):
    """The disk fills up while the member's file is written (writes fail with ENOSPC)."""
    media.on_request = full_disk(root, "clip.mp4.part")
    start()

    send(fake_telegram, webhook_bot, media.url("/clip.mp4"), 611)

    job = wait_for(lambda: (jobs := download_jobs()) and finished(jobs[0]) and jobs[0], what="the download to end")
    assert (job.status, job.attempts, job.error_class) == ("failed", 1, "permanent")
    assert "Disk full" in job.last_error and "No space left on device" in job.last_error
    assert edits(fake_telegram, 611)[-1] == messages.DISK_FULL
    download = Download.objects.get()
    assert download.status == Download.Status.FAILED and "No space left on device" in download.error
    assert not fake_telegram.calls("sendVideo")
    assert not JobRecord.objects.filter(status=JobRecord.Status.RUNNING).exists()
    wait_for(lambda: not any(root.iterdir()), what="the folder and its part file to be removed")


def test_a_reply_arrives_while_a_long_download_runs(webhook_bot, fake_telegram, start, root):
    server = MediaServer(slow_seconds=4).start()
    try:
        start()
        send(fake_telegram, webhook_bot, server.url("/slow/clip.mp4"), 604)
        wait_for(lambda: any(root.iterdir()), what="the download to start")

        send(fake_telegram, webhook_bot, "/start", 605)

        fake_telegram.wait_for_calls(1, method="sendMessage", chat_id=605, timeout=10)
        assert any(root.iterdir()), "the download should still be running"
        assert not fake_telegram.calls("sendVideo")
        fake_telegram.wait_for_calls(1, method="sendVideo", chat_id=604, timeout=20)
    finally:
        server.stop()


def test_a_member_has_one_download_running_and_a_few_waiting(webhook_bot, fake_telegram, media, start):
    # Replies into one chat are paced at about one a second: the first download must
    # still be running when the third link is handled.
    media.slow_seconds = 4.0
    start(DOWNLOADS_MAX_WAITING="1")
    links = [media.url(f"/slow/clip.mp4?n={n}") for n in range(3)]

    for link in links:
        send(fake_telegram, webhook_bot, link, 606)

    fake_telegram.wait_for_calls(3, method="sendMessage", chat_id=606, timeout=20)
    assert texts(fake_telegram, 606) == [
        "Downloading…",
        "Queued: you have 1 download waiting. Downloading…",
        "You have 1 download waiting. Please send this link again when they're done.",
    ]
    first, second = fake_telegram.wait_for_calls(2, method="sendVideo", chat_id=606, timeout=30)
    assert first.params["caption"].endswith(links[0]) and second.params["caption"].endswith(links[1])
    assert JobRecord.objects.filter(kind=download_media.kind).count() == 2
    second_fetched = [at for at, path in media.requested_at if path.endswith("?n=1")]
    assert second_fetched and min(second_fetched) > first.received_at, "the second began once the first was sent"


def test_a_worker_killed_mid_download_leaves_no_folder_behind(webhook_bot, fake_telegram, media, start, root, clusters):
    media.slow_seconds = 1.0
    running = start(QUEUE_DOWNLOADS_TIMEOUT="3")
    send(fake_telegram, webhook_bot, media.url("/slow/clip.mp4"), 607)
    fake_telegram.wait_for_calls(1, method="editMessageText", chat_id=607, timeout=20)

    running["downloads"].kill()

    (left_behind,) = root.iterdir()
    # Only a folder older than the queue's timeout is certainly not a live download's.
    wait_for(lambda: time.time() - left_behind.stat().st_mtime > 3, what="the folder to be older than the timeout")
    env = {name: value for name, value in running["downloads"].env.items() if name != "Q_CLUSTER_NAME"}
    # The second attempt must fit the 3 s timeout even on a loaded machine.
    media.slow_seconds = 0
    clusters.start("downloads", **env)
    fake_telegram.wait_for_calls(1, method="sendVideo", chat_id=607, timeout=30)
    wait_for(lambda: not any(root.iterdir()), what="the sweep to remove the dead download's folder")
    job = JobRecord.objects.get(kind=download_media.kind)
    wait_for(lambda: finished(job))
    assert (job.status, job.attempts) == ("succeeded", 2)


@pytest.mark.parametrize(
    ("path", "method", "kind"),
    [
        ("/track.mp3", "sendAudio", MediaCache.Kind.AUDIO),
        ("/photo.png", "sendPhoto", MediaCache.Kind.PHOTO),
        # Telegram plays only MP3 and M4A as audio: other sound goes as a file.
        ("/sound.wav", "sendDocument", MediaCache.Kind.DOCUMENT),
    ],
)
def test_a_track_a_picture_and_other_files_go_as_what_they_are(
    webhook_bot, fake_telegram, media, start, path, method, kind
):
    start()
    url, name = media.url(path), path.lstrip("/")

    send(fake_telegram, webhook_bot, url, 608)

    upload = fake_telegram.wait_for_calls(1, method=method, chat_id=608, timeout=20)[0]
    assert (upload.files[0].field, upload.files[0].filename) == (kind, name)
    assert upload.files[0].size == len(media.files[path][0])
    assert upload.params["caption"] == f"{name.partition('.')[0]}\n{url}"
    assert not fake_telegram.calls("sendVideo")
    cached = wait_for(lambda: MediaCache.objects.filter(url=url).first(), what="the cache row")
    assert cached.kind == kind
    sent = upload.result[kind][-1] if kind == MediaCache.Kind.PHOTO else upload.result[kind]
    assert cached.file_id == sent["file_id"]
    requests_before = media.count(path)

    send(fake_telegram, webhook_bot, url, 608)

    again = fake_telegram.wait_for_calls(2, method=method, chat_id=608)[1]
    assert again.params[kind] == cached.file_id and not again.files
    assert media.count(path) == requests_before


def test_a_member_may_ask_for_a_few_downloads_a_day(webhook_bot, fake_telegram, media, start):
    member = TelegramUser.objects.create(bot=webhook_bot, telegram_id=609)
    yesterday = timezone.now() - timedelta(hours=25)
    Download.objects.create(bot=webhook_bot, member=member, url="https://a.example/", chat_id=609, created_at=yesterday)
    start(DOWNLOADS_PER_MEMBER_DAILY="2")
    first, second, third = (media.url(f"/clip.mp4?n={n}") for n in range(3))

    for n, link in enumerate((first, second), start=1):
        send(fake_telegram, webhook_bot, link, 609)
        fake_telegram.wait_for_calls(n, method="sendVideo", chat_id=609, timeout=20)
    send(fake_telegram, webhook_bot, third, 609)

    refusal = "You've reached the limit of 2 downloads a day. Please try again tomorrow."
    wait_for(lambda: refusal in texts(fake_telegram, 609), what="the refusal")
    assert len(download_jobs()) == 2
    assert not Download.objects.filter(url=third).exists()

    send(fake_telegram, webhook_bot, first, 609)

    again = fake_telegram.wait_for_calls(3, method="sendVideo", chat_id=609)[2]
    assert not again.files, "a link already sent is answered from the cache, limit or not"
    assert len(download_jobs()) == 2


def test_an_operator_retry_takes_the_download_over(webhook_bot, fake_telegram, media, start, admin_client):
    start()
    media.gone.add("/clip.mp4")
    url = media.url("/clip.mp4")
    send(fake_telegram, webhook_bot, url, 610)
    failed = wait_for(lambda: (jobs := download_jobs()) and finished(jobs[0]) and jobs[0], what="the download to end")
    assert failed.status == "failed"
    assert edits(fake_telegram, 610)[-1] == messages.NOT_FOUND
    media.gone.clear()

    changelist = reverse("admin:queueing_jobrecord_changelist")
    admin_client.post(changelist, {"action": "retry_selected", ACTION_CHECKBOX_NAME: [failed.pk], "index": "0"})

    fake_telegram.wait_for_calls(1, method="sendVideo", chat_id=610, timeout=20)
    retry = JobRecord.objects.get(retry_of=failed)
    wait_for(lambda: finished(retry))
    assert retry.status == "succeeded"
    download = Download.objects.get()
    assert (download.job_id, download.status, download.error) == (retry.pk, Download.Status.SENT, "")
    assert messages.STARTING in edits(fake_telegram, 610)[1:], "the failure message says it is on again"
    fake_telegram.wait_for_calls(1, method="deleteMessage", chat_id=610)


def test_the_downloads_cluster_sweeps_stale_folders_with_no_download(clusters, root):
    stale, fresh = root / "stale", root / "fresh"
    for folder in (stale, fresh):
        folder.mkdir()
        (folder / "part.mp4.part").write_bytes(b"half a video")
    an_hour_ago = time.time() - 3600
    os.utime(stale, (an_hour_ago, an_hour_ago))

    clusters.start("downloads", DOWNLOADS_ROOT=str(root), QUEUE_DOWNLOADS_TIMEOUT="600")

    wait_for(lambda: not stale.exists(), timeout=10, what="the sweep to remove the stale folder")
    assert fresh.exists(), "a folder younger than the queue's timeout may be a live download's"
    assert not JobRecord.objects.exists()
    (fresh / "part.mp4.part").unlink()
    fresh.rmdir()
