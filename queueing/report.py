"""The numbers behind `manage.py queue_report`: what the queues did in the last hours.

Every job number comes from queueing.stats (hour and minute rows plus the not yet
rolled-up tail). A window longer than the per-minute statistics are kept starts on a whole
hour, and its busiest minute is that of the minutes still kept. Other apps add sections
with `register_report_section` (broadcasts adds its outcomes), so queueing imports none
of them."""

from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta

from django.utils import timezone
from django.utils.dateparse import parse_datetime

from queueing.models import JobRecord
from queueing.registry import Registry
from queueing.stats import (
    HOUR_ROWS_KEPT,
    MINUTE_ROWS_KEPT,
    floor_hour,
    floor_minute,
    queues_now,
    unrolled,
    window_by,
    window_start,
)
from queueing.wording import failed_as

LONGEST_HOURS = int(HOUR_ROWS_KEPT.total_seconds() // 3600)

# provider(since, until) returning something JSON can hold.
ReportSection = Callable[[datetime, datetime], object]
sections: Registry[ReportSection] = Registry("report section")


def register_report_section(name: str, provider: ReportSection) -> None:
    """Add a section to every queue report; registering a name again replaces it."""
    sections.register(name, provider)


def _seconds(value: float | None) -> float | None:
    return round(value, 3) if value is not None else None


def build_report(hours: int, now: datetime | None = None) -> dict:
    now = now or timezone.now()
    since = window_start(now, timedelta(hours=hours))
    if since < now - MINUTE_ROWS_KEPT + timedelta(hours=1):
        since = floor_hour(since)  # the minutes before its first whole hour are pruned
    minutes = int((floor_minute(now) - since).total_seconds() // 60) + 1
    tail = unrolled()
    current = queues_now()

    by_status: dict[str, dict[str, int]] = defaultdict(dict)
    for (queue, status), tally in window_by(since, "queue", "status", tail=tail).items():
        by_status[queue][status] = tally.count
    peaks: dict[str, tuple[int, datetime | None]] = defaultdict(lambda: (0, None))
    for (minute, queue), tally in window_by(since, "minute", "queue", tail=tail).items():
        if tally.count > peaks[queue][0]:
            peaks[queue] = (tally.count, minute)
    timings = window_by(since, "queue", tail=tail, timings=True)

    queues = []
    for name in sorted(set(current) | set(by_status) | {q for (q,) in timings}):
        finished = by_status.get(name, {})
        state = current.get(name)
        tally = timings.get((name,))
        peak, peak_minute = peaks[name]
        queues.append(
            {
                "queue": name,
                "finished": {status: finished.get(status, 0) for status in JobRecord.FINISHED},
                "now": {
                    "queued": state.queued if state else 0,
                    "retrying": state.retrying if state else 0,
                    "running": state.running if state else 0,
                },
                "throughput_per_minute": round(sum(finished.values()) / minutes, 3),
                "peak_per_minute": peak,
                "peak_minute": peak_minute.isoformat() if peak_minute else None,
                "wait_p50": _seconds(tally.percentile("wait", 0.5)) if tally else None,
                "wait_p95": _seconds(tally.percentile("wait", 0.95)) if tally else None,
                "run_p50": _seconds(tally.percentile("run", 0.5)) if tally else None,
                "run_p95": _seconds(tally.percentile("run", 0.95)) if tally else None,
            }
        )

    failures = [
        {"queue": queue, "kind": kind, "error_class": error_class or "", "jobs": tally.count}
        for (queue, kind, status, error_class), tally in sorted(
            window_by(since, "queue", "kind", "status", "error_class", tail=tail).items(),
            key=lambda item: (-item[1].count, item[0]),
        )
        if status == JobRecord.Status.FAILED
    ]
    by_class: dict[str, int] = defaultdict(int)
    for failure in failures:
        by_class[failure["error_class"]] += failure["jobs"]

    report = {
        "generated_at": now.isoformat(),
        "hours": hours,
        "since": since.isoformat(),
        "queues": queues,
        "failures_by_class": dict(sorted(by_class.items(), key=lambda item: -item[1])),
        "failures": failures,
    }
    for name, provider in sections.items():
        report[name] = provider(since, now)
    return report


TEXT_WIDTH = 18  # a title longer than this is cut in the table (the JSON keeps it whole)


def _cell(value) -> str:
    return "–" if value is None else str(value)


def _table(headers: list[str], rows: list[list]) -> list[str]:
    """Numbers right-aligned, text left-aligned."""
    numeric = [all(isinstance(row[i], int | float) or row[i] is None for row in rows) for i in range(len(headers))]
    cells = [headers, *[[_cell(v) for v in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(row, widths, numeric, strict=True)).rstrip()
        for row in cells
    ]
    return [lines[0], "  ".join("-" * w for w in widths), *lines[1:]]


def render_table(report: dict) -> str:
    """The report for people: one table per part, seconds for times."""
    finished = list(JobRecord.FINISHED)
    since = _minute(report["since"])
    out = [f"Queue report: last {report['hours']} h (since {since})", "", "Jobs finished, by status"]
    out += _table(
        ["queue", *finished, "queued", "retrying", "running", "per min", "peak/min"],
        [
            [
                q["queue"],
                *[q["finished"][s] for s in finished],
                q["now"]["queued"],
                q["now"]["retrying"],
                q["now"]["running"],
                q["throughput_per_minute"],
                q["peak_per_minute"],
            ]
            for q in report["queues"]
        ],
    )
    out += ["", "Wait and run time (seconds)"]
    out += _table(
        ["queue", "wait p50", "wait p95", "run p50", "run p95"],
        [[q["queue"], q["wait_p50"], q["wait_p95"], q["run_p50"], q["run_p95"]] for q in report["queues"]],
    )
    out += ["", "Failed jobs by cause"]
    if report["failures"]:
        out += _table(
            ["queue", "kind", "cause", "jobs"],
            [[f["queue"], f["kind"], failed_as(f["error_class"]), f["jobs"]] for f in report["failures"]],
        )
    else:
        out.append("  none")
    for name in sections:
        out += ["", name.replace("_", " ").capitalize()]
        section = report.get(name)
        if isinstance(section, list) and section and all(isinstance(row, dict) for row in section):
            out += _section_table(section)
        elif section:
            out.append(f"  {section}")
        else:
            out.append("  none")
    return "\n".join(out) + "\n"


def _section_table(rows: list[dict]) -> list[str]:
    """Another app's rows: plain values as columns, a nested count (deliveries by status) as a
    column for each count that is not zero in every row; times to the minute, long text cut."""
    first = rows[0]
    plain = [key for key, value in first.items() if not isinstance(value, dict | list)]
    nested = [
        (key, sub)
        for key, value in first.items()
        if isinstance(value, dict)
        for sub in value
        if any(row[key].get(sub) for row in rows)
    ]
    return _table(
        [key.removesuffix("_at").replace("_", " ") for key in plain] + [sub for _, sub in nested],
        [[_short(row[key]) for key in plain] + [row[key].get(sub) for key, sub in nested] for row in rows],
    )


def _short(value):
    if not isinstance(value, str):
        return value
    if (minute := _minute(value)) != value:
        return minute
    return value if len(value) <= TEXT_WIDTH else value[: TEXT_WIDTH - 1] + "…"


def _minute(value: str) -> str:
    """An ISO time as "12-03 14:05" (month-day) in the server's time zone; any other text as it is."""
    try:
        moment = parse_datetime(value)
    except ValueError:
        return value
    return f"{timezone.localtime(moment):%m-%d %H:%M}" if moment and timezone.is_aware(moment) else value
