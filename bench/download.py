"""Downloads: the project's download job against plain yt-dlp on the same local file, in the
same run, and the time to answer a link that is already in the file_id cache.

  plain yt-dlp   `YoutubeDL({"outtmpl": ..., "quiet": True}).download([url])`, its defaults
  project job    bots.downloads.run(): the SSRF-free path (loopback is allowed here), yt-dlp
                 with our options, progress edits, the upload to the fake Telegram, the cache row
  cached link    bots.downloads.request() for a link in the cache: one sendVideo by file_id

Both download the same file from a media server on loopback; the job's figure includes the
upload that plain yt-dlp does not do. The job runs in this process (the queue's own latency is
measured by bench.queue_throughput). Throwaway SQLite database and folders, removed afterwards.

    .venv/bin/python -m bench.download [--size-mb 20] [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=float, default=20, help="size of the served file (default 20)")
    parser.add_argument("--runs", type=int, default=5, help="runs of each, the median is printed (default 5)")
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


def measure(args: argparse.Namespace, var: Path) -> int:
    import yt_dlp
    from django.core.management import call_command

    from bots import downloads
    from bots.models import Bot, Download, MediaCache, TelegramUser
    from bots.telegram_api import call
    from tests.fake_telegram import FakeTelegram, make_token
    from tests.media_server import CLIP, MediaServer

    call_command("migrate", verbosity=0)
    clip = CLIP.read_bytes()
    media = clip * max(1, int(args.size_mb * 1024 * 1024 / len(clip)))
    server, fake = MediaServer(media=media).start(), FakeTelegram(record="full").start()
    try:
        bot = Bot.objects.create(token=make_token(7100001), api_base_url=fake.base_url)
        member = TelegramUser.objects.create(bot=bot, telegram_id=4242, first_name="Bench")
        url = server.url("/clip.mp4")

        def plain() -> None:
            with (
                tempfile.TemporaryDirectory(dir=var) as folder,
                yt_dlp.YoutubeDL({"outtmpl": f"{folder}/%(id)s.%(ext)s", "quiet": True}) as ydl,
            ):
                ydl.download([url])

        def job() -> None:
            MediaCache.objects.all().delete()
            message = call(bot, "send_message", chat_id=member.telegram_id, text=downloads.STARTING)
            download = Download.objects.create(
                bot=bot, member=member, url=url, chat_id=member.telegram_id, message_id=message.message_id
            )
            downloads.run(download.pk)

        def cached() -> None:
            downloads.request(bot, member, member.telegram_id, url, lambda text: None)

        plain()  # warm up: imports, extractor lists, connections
        job()
        plain_times, job_times = [], []
        for _ in range(args.runs):
            plain_times.append(timed(plain))
            job_times.append(timed(job))
        uploads_before = fake.count("sendVideo")
        requests_before = server.count("/clip.mp4")
        cached_times = [timed(cached) for _ in range(args.runs)]
        assert fake.count("sendVideo") == uploads_before + args.runs
        assert server.count("/clip.mp4") == requests_before, "a cached link must not be downloaded"
    finally:
        server.stop()
        fake.stop()

    plain_s, job_s, cached_s = (statistics.median(times) for times in (plain_times, job_times, cached_times))
    print(f"file: {len(media) / (1024 * 1024):.1f} MB on loopback, median of {args.runs} runs")
    print(f"plain yt-dlp:        {plain_s * 1000:8.1f} ms")
    print(f"project job:         {job_s * 1000:8.1f} ms  (download + upload to the fake Telegram)")
    print(f"ratio job / plain:   {job_s / plain_s:8.2f}    (goal <= 1.3)")
    print(f"cached link answer:  {cached_s * 1000:8.1f} ms")
    return 0


def timed(func) -> float:
    started = time.perf_counter()
    func()
    return time.perf_counter() - started


if __name__ == "__main__":
    sys.exit(main())
