"""Downloads: the project's download job against plain yt-dlp on the same local file, in the
same run, phase by phase, and the time to answer a link that is already in the file_id cache.

  plain yt-dlp    `YoutubeDL({"outtmpl": ..., "quiet": True, "noprogress": True}).download([url])`
  project job     bots.downloads.job.run() in this process: the cache lookup, yt-dlp with our options
                  and checks in a fresh folder, the upload to the fake Telegram, the progress
                  message, the cache row; its own stopwatch splits it into
                    download   yt-dlp and our checks: the same work as plain yt-dlp
                    upload     "Sending the file…" and sendVideo with the file to the fake Telegram
                    the rest   database rows, the progress message's removal, the folder
  through queue   the same job enqueued on a real `downloads` qcluster: enqueue to finished,
                  from the job record's own times, warm and as a fresh worker's first job
                  (skip with --no-queue)
  cached link     bots.download_requests.request() for a link in the cache: one sendVideo by file_id

Plain yt-dlp only downloads, so the ratio that compares like with like is the job without its
upload against plain yt-dlp (goal <= 1.3); the upload and the whole job are printed beside it.
The job's download phase can beat plain yt-dlp: a worker builds yt-dlp's extractor list once
(bots.downloads.ytdlp.default_extractors), where every new YoutubeDL spends some 50-70 ms on it.
The media server runs in this process (both contestants share it); the fake Telegram runs in a
process of its own, as Telegram would. Throwaway SQLite database and folders, removed afterwards.

    .venv/bin/python -m bench.download [--size-mb 20] [--runs 7] [--no-queue]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=float, default=20, help="size of the served file (default 20)")
    parser.add_argument("--runs", type=int, default=7, help="runs of each, the median is printed (default 7)")
    parser.add_argument("--no-queue", action="store_true", help="skip the run through a real downloads qcluster")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-download-") as var:
        os.environ.update(
            VAR_DIR=var,
            DATABASE_URL=f"sqlite:///{var}/db.sqlite3",
            DJANGO_SETTINGS_MODULE="config.settings",
            DOWNLOADS_ALLOW_PRIVATE_HOSTS="1",
            DOWNLOADS_ROOT=f"{var}/downloads",
        )
        os.environ.pop("REDIS_URL", None)
        sys.path.insert(0, str(ROOT))
        import django

        django.setup()
        return measure(args, Path(var))


@contextmanager
def fake_telegram_process() -> Iterator:
    """`python -m tests.fake_telegram` in a process of its own; yields its control client."""
    from tests.fake_telegram import FakeTelegramControl

    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fake_telegram", "--port", "0"], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        fake = FakeTelegramControl(process.stdout.readline().strip())
        fake.wait_until_up()
        yield fake
    finally:
        process.terminate()
        process.wait(10)


def measure(args: argparse.Namespace, var: Path) -> int:
    import yt_dlp
    from django.core.management import call_command

    from bots import download_requests as request
    from bots.downloads import job as download_job
    from bots.downloads import messages
    from bots.models import Bot, Download, MediaCache, TelegramUser
    from bots.telegram_api import call
    from tests.fake_telegram import make_token
    from tests.media_server import CLIP, MediaServer

    call_command("migrate", verbosity=0)
    clip = CLIP.read_bytes()
    media = clip * max(1, int(args.size_mb * 1024 * 1024 / len(clip)))
    server = MediaServer(media=media).start()
    try:
        with fake_telegram_process() as fake:
            bot = Bot.objects.create(token=make_token(7100001), api_base_url=fake.base_url)
            member = TelegramUser.objects.create(bot=bot, telegram_id=4242, first_name="Bench")
            url = server.url("/clip.mp4")

            def plain() -> None:
                with tempfile.TemporaryDirectory(dir=var) as folder:
                    options = {"outtmpl": f"{folder}/%(id)s.%(ext)s", "quiet": True, "noprogress": True}
                    with yt_dlp.YoutubeDL(options) as ydl:
                        ydl.download([url])

            def new_download() -> Download:
                """What request() does once a link is let through: the progress message, the row."""
                MediaCache.objects.all().delete()
                message = call(bot, "send_message", chat_id=member.telegram_id, text=messages.STARTING)
                return Download.objects.create(
                    bot=bot, member=member, url=url, chat_id=member.telegram_id, message_id=message.message_id
                )

            def job() -> tuple[float, dict]:
                return timed_result(download_job.run, new_download().pk)

            def cached() -> None:
                request.request(bot, member, member.telegram_id, url, lambda text: None)

            plain()  # warm up: imports, extractor lists, connections
            job()
            plain_times, job_times, summaries = [], [], []
            for _ in range(args.runs):
                plain_times.append(timed(plain))
                seconds, result = job()
                job_times.append(seconds)
                summaries.append(result)
            queue_runs = [] if args.no_queue else through_queue(var, new_download, args.runs)
            uploads_before = fake.count("sendVideo")
            requests_before = server.count("/clip.mp4")
            cached_times = [timed(cached) for _ in range(args.runs)]
            assert fake.count("sendVideo") == uploads_before + args.runs
            assert server.count("/clip.mp4") == requests_before, "a cached link must not be downloaded"
    finally:
        server.stop()

    plain_s, job_s, cached_s = (statistics.median(times) for times in (plain_times, job_times, cached_times))
    download_s = statistics.median(result["download_seconds"] for result in summaries)
    upload_s = statistics.median(result["upload_seconds"] for result in summaries)
    without_upload_s = statistics.median(
        total - result["upload_seconds"] for total, result in zip(job_times, summaries, strict=True)
    )
    ms = 1000
    print(f"file: {len(media) / (1024 * 1024):.1f} MB on loopback, median of {args.runs} runs")
    print(f"plain yt-dlp (download only):      {plain_s * ms:8.1f} ms")
    print(f"project job, download phase:       {download_s * ms:8.1f} ms  ratio {download_s / plain_s:.2f}")
    print(
        f"project job without the upload:    {without_upload_s * ms:8.1f} ms  "
        f"ratio {without_upload_s / plain_s:.2f}  (goal <= 1.3; download + bookkeeping)"
    )
    print(f"upload to the fake Telegram:       {upload_s * ms:8.1f} ms  (sendVideo with the file; plain does none)")
    print(f"whole project job:                 {job_s * ms:8.1f} ms  (ratio {job_s / plain_s:.2f} with the upload)")
    if queue_runs:
        (_, first_s, _), warm = queue_runs[0], queue_runs[1:]
        wait_s = statistics.median(wait for wait, _, _ in warm)
        total_s = statistics.median(total for _, total, _ in warm)
        run_s = statistics.median(result["seconds"] for _, _, result in warm)
        print(
            f"through the downloads qcluster:    {total_s * ms:8.1f} ms  (enqueue to finished: "
            f"{wait_s * ms:.0f} ms waiting for a worker, the job {run_s * ms:.0f} ms)"
        )
        print(f"  a fresh worker's first job:      {first_s * ms:8.1f} ms  (yt-dlp warmed up before the fork)")
    print(f"cached link answer:                {cached_s * ms:8.1f} ms  (sendVideo by file_id, no download)")
    return 0


def through_queue(var: Path, new_download: Callable, runs: int) -> list[tuple[float, float, dict]]:
    """(wait, enqueue to finished, the job's summary) of each run on a real downloads qcluster,
    the first of them on a fresh worker."""
    from bots.tasks import download_media
    from queueing.models import JobRecord
    from tests.clusters import ClusterProcess

    cluster = ClusterProcess("downloads", var).start()
    try:
        measured = []
        for _ in range(runs + 1):
            record = download_media.enqueue(new_download().pk)
            deadline = time.monotonic() + 60
            while not record.is_finished:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"The queued download did not finish:\n{cluster.log()[-3000:]}")
                time.sleep(0.02)
                record.refresh_from_db()
            if record.status != JobRecord.Status.SUCCEEDED:
                raise RuntimeError(f"The queued download {record.status}: {record.last_error}")
            measured.append(
                (
                    (record.started_at - record.enqueued_at).total_seconds(),
                    (record.finished_at - record.enqueued_at).total_seconds(),
                    record.result,
                )
            )
        return measured  # the first is a fresh worker's
    finally:
        cluster.stop()


def timed(func: Callable) -> float:
    return timed_result(func)[0]


def timed_result(func: Callable, *args) -> tuple[float, Any]:
    started = time.perf_counter()
    result = func(*args)
    return time.perf_counter() - started, result


if __name__ == "__main__":
    sys.exit(main())
