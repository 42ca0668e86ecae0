"""`manage.py queue_report`: jobs by status, throughput, timings, failures and broadcast
outcomes of the last N hours, as JSON or a table."""

import json
import re
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from bots.models import Bot, TelegramUser
from broadcasts.models import Broadcast, Delivery
from queueing.models import JobRecord
from tests.fake_telegram.objects import make_token

pytestmark = pytest.mark.django_db


def finished(status: str, ago: timedelta, wait: float = 1.0, run: float = 2.0, **fields) -> JobRecord:
    end = timezone.now() - ago
    started = end - timedelta(seconds=run)
    return JobRecord.objects.create(
        queue=fields.pop("queue", "telegram"),
        kind=fields.pop("kind", "tests.jobs.echo"),
        status=status,
        enqueued_at=started - timedelta(seconds=wait),
        dispatched_at=started - timedelta(seconds=wait),
        started_at=started,
        finished_at=end,
        **fields,
    )


def report(*args: str) -> dict:
    out = StringIO()
    call_command("queue_report", "--format", "json", *args, stdout=out)
    return json.loads(out.getvalue())


def telegram(body: dict) -> dict:
    return next(q for q in body["queues"] if q["queue"] == "telegram")


@pytest.fixture
def jobs():
    for _ in range(6):
        finished("succeeded", timedelta(minutes=10), wait=1.0, run=2.0)
    finished("succeeded", timedelta(minutes=20), wait=30.0, run=50.0)
    finished("failed", timedelta(minutes=5), error_class="permanent", kind="tests.jobs.fail_permanently")
    finished("failed", timedelta(minutes=5), error_class="retriable", kind="tests.jobs.crash")
    finished("failed", timedelta(minutes=6), error_class="retriable", kind="tests.jobs.crash")
    finished("cancelled", timedelta(minutes=7))
    finished("succeeded", timedelta(hours=3))  # outside a 2-hour window
    JobRecord.objects.create(queue="telegram", kind="tests.jobs.echo", status="queued")
    JobRecord.objects.create(queue="telegram", kind="tests.jobs.echo", status="retrying", attempts=1)


def test_counts_throughput_and_timings_per_queue(jobs):
    body = report("--hours", "2")
    assert body["hours"] == 2
    q = telegram(body)
    assert q["finished"] == {"succeeded": 7, "failed": 3, "cancelled": 1}
    assert q["now"] == {"queued": 1, "retrying": 1, "running": 0}
    assert q["throughput_per_minute"] == round(11 / 120, 3)
    assert q["peak_per_minute"] == 6
    assert 0 < q["wait_p50"] <= 2.0 and q["wait_p95"] > q["wait_p50"]
    assert 1.0 < q["run_p50"] <= 5.0 and q["run_p95"] > q["run_p50"]
    wider = telegram(report("--hours", "4"))
    assert wider["finished"]["succeeded"] == 8


def test_failures_by_error_class(jobs):
    body = report("--hours", "1")
    assert body["failures_by_class"] == {"retriable": 2, "permanent": 1}
    assert body["failures"][0] == {
        "queue": "telegram",
        "kind": "tests.jobs.crash",
        "error_class": "retriable",
        "jobs": 2,
    }


@pytest.fixture
def broadcasts(settings):
    settings.TELEGRAM_BOT_TOKEN = ""
    bot = Bot.objects.create(token=make_token(7300001), webhook_secret=Bot.new_secret())
    members = [TelegramUser.objects.create(bot=bot, telegram_id=100 + i) for i in range(4)]
    now = timezone.now()
    done = Broadcast.objects.create(
        bot=bot,
        title="Spring appeal",
        text="Hi",
        status="done",
        started_at=now - timedelta(minutes=50),
        finished_at=now - timedelta(minutes=40),
    )
    for member, status in zip(members, ["sent", "sent", "failed", "skipped"], strict=True):
        Delivery.objects.create(broadcast=done, member=member, chat_id=member.telegram_id, status=status)
    sending = Broadcast.objects.create(
        bot=bot, title="Reminder", text="Hi", status="sending", started_at=now - timedelta(minutes=5)
    )
    for member, status in zip(members, ["sent", "pending", "pending", "retrying"], strict=True):
        Delivery.objects.create(broadcast=sending, member=member, chat_id=member.telegram_id, status=status)
    Broadcast.objects.create(
        bot=bot,
        title="Old news",
        text="Hi",
        status="done",
        started_at=now - timedelta(hours=30),
        finished_at=now - timedelta(hours=29),
    )
    Broadcast.objects.create(bot=bot, title="Draft", text="Hi")
    return done, sending


def test_broadcasts_started_or_finished_in_the_window(broadcasts):

    body = report("--hours", "1")
    assert [b["title"] for b in body["broadcasts"]] == ["Spring appeal", "Reminder"]
    first, second = body["broadcasts"]
    assert first["status"] == "done" and first["finished_at"]
    assert {k: v for k, v in first["deliveries"].items() if v} == {"sent": 2, "failed": 1, "skipped": 1, "total": 4}
    assert second["deliveries"]["pending"] == 2 and second["deliveries"]["retrying"] == 1
    assert second["deliveries"]["total"] == 4
    assert report("--hours", "30")["broadcasts"][0]["title"] == "Old news"


def test_output_file_is_json(jobs, broadcasts, tmp_path):
    path = tmp_path / "report.json"
    out, err = StringIO(), StringIO()
    call_command("queue_report", "--hours", "1", "--output", str(path), stdout=out, stderr=err)
    body = json.loads(path.read_text())
    assert telegram(body)["finished"]["failed"] == 3 and len(body["broadcasts"]) == 2
    assert out.getvalue() == "" and str(path) in err.getvalue()


def test_table_by_default(jobs, broadcasts):
    out = StringIO()
    call_command("queue_report", "--hours", "1", stdout=out)
    text = out.getvalue()
    assert text.startswith("Queue report: last 1 h")
    for heading in ["Jobs finished, by status", "Wait and run time", "Failed jobs by cause", "Broadcasts"]:
        assert heading in text
    assert "tests.jobs.crash" in text and "Spring appeal" in text and "Reminder" in text
    assert "errors, out of attempts" in text and "refused, not retried" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


def test_an_empty_window_and_bad_hours():
    body = report("--hours", "1")
    assert all(sum(q["finished"].values()) == 0 for q in body["queues"])
    assert body["failures"] == [] and body["broadcasts"] == []
    call_command("queue_report", "--hours", "1", stdout=StringIO())
    with pytest.raises(CommandError):
        call_command("queue_report", "--hours", "0")


def test_a_window_longer_than_the_minute_rows_reads_hour_rows_from_a_whole_hour():
    from queueing.models import JobMinute, RollupCursor
    from queueing.stats import floor_hour, roll_up

    now = timezone.now()
    RollupCursor.objects.create(queue="telegram", rolled_until=floor_hour(now - timedelta(hours=70)))
    for hours_ago in (60, 30, 1):
        finished("succeeded", timedelta(hours=hours_ago))
    for _ in range(3):  # 30 hours a call
        roll_up("telegram")
    assert not JobMinute.objects.filter(minute__lt=now - timedelta(hours=48)).exists()  # pruned

    body = report("--hours", "72")

    assert body["since"] == floor_hour(now - timedelta(hours=72) + timedelta(minutes=1)).isoformat()
    assert telegram(body)["finished"]["succeeded"] == 3
    assert telegram(report("--hours", "59"))["finished"]["succeeded"] == 2
    with pytest.raises(CommandError, match="from 1 to 2160"):
        call_command("queue_report", "--hours", "2161")


def test_the_table_fits_120_columns_with_times_to_the_minute(jobs, broadcasts, settings):
    settings.TIME_ZONE = "UTC"
    done, _ = broadcasts
    done.title = "A spring appeal with a title far longer than any table column"
    done.save()
    out = StringIO()

    call_command("queue_report", "--hours", "1", stdout=out)

    text = out.getvalue()
    assert max(len(line) for line in text.splitlines()) < 120
    assert f"{done.started_at:%m-%d %H:%M}" in text and f"{done.finished_at:%m-%d %H:%M}" in text
    assert done.started_at.isoformat() not in text
    assert not re.search(r"\d\d:\d\d:\d\d", text)
    assert "A spring appeal w…" in text
    header = next(line for line in text.splitlines() if line.startswith("id"))
    assert header.split() == [
        "id",
        "title",
        "bot",
        "status",
        "started",
        "finished",
        "pending",
        "sent",
        "retrying",
        "failed",
        "skipped",
        "total",
    ]
