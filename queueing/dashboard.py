"""The queue dashboard in the admin and the JSON endpoint behind the same login, for staff with
the view_queue_dashboard permission. Every number comes from queueing.stats, health and the
heartbeats: no query reads more than the chosen window's per-minute rows and the unfinished jobs."""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import admin
from django.contrib.auth.decorators import permission_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.safestring import SafeString, mark_safe
from django.views.decorators.http import require_safe

from queueing import health, redaction
from queueing.models import Alert, ClusterHeartbeat, JobRecord
from queueing.queues import broker_for, queue_names
from queueing.registry import Registry
from queueing.stats import binned_counts, failure_rates, queues_now, unrolled, window_by, window_start
from queueing.wording import duration, error_sentence, failed_as

logger = logging.getLogger(__name__)

WINDOWS = (1, 6, 24)
CHART_BINS = 60
TICK_EVERY_BINS = 10  # a labelled time every 10 min, 1 h or 4 h
RECENT_FAILURES = 10
# Worker hosts, failures and broadcast titles: more than every staff user needs to see.
PERMISSION = "queueing.view_queue_dashboard"


@dataclass
class Point:
    start: datetime
    finished: float  # jobs per minute, averaged over the bin
    failed: float | None


@dataclass(frozen=True)
class Panel:
    """A part of the dashboard another app provides: `provider()` returns JSON-able data,
    shown under `title` by `template` (which gets it as `panel.data`)."""

    name: str
    title: str
    template: str
    provider: Callable[[], object]


panels: Registry[Panel] = Registry("dashboard panel")


def register_panel(name: str, provider: Callable[[], object], *, title: str, template: str) -> None:
    """Add a panel to the dashboard and its JSON (under "panels"); an app calls this from its
    AppConfig.ready(), so queueing never imports it. Registering a name again replaces it."""
    panels.register(name, Panel(name, title, template, provider))


def _panel_data() -> dict[str, object]:
    data = {}
    for panel in panels.values():
        try:
            data[panel.name] = panel.provider()
        except Exception:  # one broken panel must not take the queue numbers down with it
            logger.exception("Dashboard panel %s failed", panel.name)
            data[panel.name] = None
    return data


def _hours(request: HttpRequest) -> int:
    try:
        hours = int(request.GET.get("hours", 1))
    except ValueError:
        return 1
    return hours if hours in WINDOWS else 1


def _seconds(value: float | None) -> float | None:
    return round(value, 3) if value is not None else None


def _history_url(**filters: str) -> str:
    return f"{reverse('admin:queueing_jobrecord_changelist')}?{urlencode(filters)}"


def throughput(since: datetime, hours: int, tail: dict | None = None) -> list[Point]:
    """Finished and failed jobs per minute, in CHART_BINS bins of the window."""
    bin_minutes = hours * 60 // CHART_BINS
    points = [Point(since + timedelta(minutes=i * bin_minutes), 0.0, 0.0) for i in range(CHART_BINS)]
    for (index, status), jobs in binned_counts(since, bin_minutes, tail).items():
        if not 0 <= index < CHART_BINS:
            continue
        points[index].finished += jobs / bin_minutes
        if status == JobRecord.Status.FAILED:
            points[index].failed += jobs / bin_minutes
    return points


def chart_svg(
    points: list[Point], width: int = 720, height: int = 210, noun: str = "jobs", done: str = "finished"
) -> SafeString:
    """A line chart of finished (green) and failed (red) jobs per minute, with a time axis
    dated in the server's time zone, a jobs-per-minute axis and each bin's values in a
    tooltip (its <title>); drawn by admin/queueing/throughput_chart.html. Other things per
    minute name themselves (`noun`, `done`: "deliveries", "sent"); without failures counted
    (every `failed` None) there is no red line."""
    if not points:
        return mark_safe("")
    left, right, top_pad, bottom = 58, 12, 10, 44
    plot_w, plot_h = width - left - right, height - top_pad - bottom
    base = top_pad + plot_h
    top = nice_ceiling(max(p.finished for p in points))
    bin_w = plot_w / len(points)
    bin_span = points[1].start - points[0].start if len(points) > 1 else timedelta(minutes=1)
    dated = bin_span * len(points) >= timedelta(hours=24)

    def x(index: int) -> str:
        return f"{left + (index + 0.5) * bin_w:.1f}"

    def line(values: list[float]) -> str:
        return " ".join(f"{x(i)},{base - v / top * plot_h:.1f}" for i, v in enumerate(values))

    def x_label(at: datetime) -> str:
        at = timezone.localtime(at)
        return f"{at.day} {at:%b %H:%M}" if dated else f"{at:%H:%M}"

    def bin_title(point: Point) -> str:
        start, end = timezone.localtime(point.start), timezone.localtime(point.start + bin_span)
        failed = "" if point.failed is None else f", {point.failed:.3g} failed"
        values = f"{point.finished:.3g} {done}{failed} per minute"
        return f"{start.day} {start:%b %H:%M}–{end:%H:%M}: {values}"

    context = {
        "width": width,
        "height": height,
        "left": left,
        "right_edge": width - right,
        "top_pad": top_pad,
        "base": base,
        "tick_end": base + 4,
        "plot_height": plot_h,
        "bin_width": f"{bin_w:.1f}",
        "y_label_x": left - 4,
        "x_label_y": base + 16,
        "time_label_x": f"{left + plot_w / 2:.1f}",
        "time_label_y": height - 4,
        "jobs_label_y": f"{top_pad + plot_h / 2:.1f}",
        "zone": timezone.localtime(points[0].start).tzname(),
        "y_ticks": [
            {"y": f"{base - f * plot_h:.1f}", "label_y": f"{base - f * plot_h + 4:.1f}", "label": f"{top * f:.3g}"}
            for f in (0, 0.5, 1)
        ],
        "x_ticks": [
            {"x": x(index), "label": x_label(points[index].start)} for index in range(0, len(points), TICK_EVERY_BINS)
        ],
        "finished_line": line([p.finished for p in points]),
        "failed_line": line([p.failed for p in points]) if points[0].failed is not None else "",
        "noun": noun,
        "done": done,
        "bins": [{"x": f"{left + i * bin_w:.1f}", "title": bin_title(p)} for i, p in enumerate(points)],
    }
    return mark_safe(render_to_string("admin/queueing/throughput_chart.html", context))


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 5, 10, 20, 50... at or above `value` (at least 1): a round top
    for the chart's axis."""
    top = 1.0
    while top < value:
        for factor in (2, 2.5, 2):
            top *= factor
            if top >= value:
                break
    return top


def _broker_size(queue: str) -> int | None:
    try:
        return broker_for(queue).queue_size()
    except Exception:
        return None


@dataclass(frozen=True)
class Window:
    """What every section of the dashboard reads once: the window, the not yet rolled-up
    tail of the history, the last hour's failure rates and the health report."""

    hours: int
    now: datetime
    since: datetime
    tail: dict
    rates: dict[str, tuple[int, int]]
    report: health.Report

    @classmethod
    def read(cls, hours: int) -> "Window":
        now = timezone.now()
        tail = unrolled()
        rates = failure_rates(timedelta(hours=1), tail)
        return cls(hours, now, window_start(now, timedelta(hours=hours)), tail, rates, health.detailed(tail, rates))

    @cached_property
    def points(self) -> list[Point]:
        """The throughput chart's bins (the JSON has them too)."""
        return throughput(self.since, self.hours, self.tail)


def dashboard_data(window: Window) -> dict:
    """The dashboard's JSON, a function per section."""
    by_kind = kind_section(window)
    return {
        "generated_at": window.now.isoformat(),
        "hours": window.hours,
        "status": window.report.status,
        "alerts": _alerts(window.report.problems),
        "queues": queue_section(window),
        "workers": cluster_section(window),
        "throughput": [
            {"start": p.start.isoformat(), "finished_per_minute": round(p.finished, 3), "failed_per_minute": p.failed}
            for p in window.points
        ],
        "finished": sum(row["jobs"] for row in by_kind),
        "by_kind": by_kind,
        "failures_by_class": failure_class_section(window),
        "recent_failures": recent_failure_section(),
        "panels": _panel_data(),
    }


def _alive(beat: ClusterHeartbeat, now: datetime) -> bool:
    return beat.last_seen >= now - timedelta(seconds=settings.HEARTBEAT_TIMEOUT)


def queue_section(window: Window) -> list[dict]:
    """Each queue's state now and its failure rate over the last hour."""
    current = queues_now()
    alive = [beat for beat in ClusterHeartbeat.objects.all() if _alive(beat, window.now)]
    rows = []
    for name in queue_names():
        state = current[name]
        failed, finished = window.rates.get(name, (0, 0))
        rows.append(
            {
                "queue": name,
                "status": _queue_status(name, window.report.problems),
                "depth": state.queued,
                "retrying": state.retrying,
                "running": state.running,
                "oldest_wait_seconds": _seconds(state.oldest_wait),
                "oldest_wait": duration(state.oldest_wait) if state.oldest_wait is not None else None,
                "in_broker": _broker_size(name),
                "workers_alive": sum(b.workers for b in alive if b.queue == name),
                "clusters_alive": sum(1 for b in alive if b.queue == name),
                "failed_last_hour": failed,
                "finished_last_hour": finished,
                "failure_rate_last_hour": round(failed / finished, 4) if finished else None,
            }
        )
    return rows


def cluster_section(window: Window) -> list[dict]:
    """Every cluster with a heartbeat row, alive or not."""
    now = window.now
    return [
        {
            "queue": beat.queue,
            "host": beat.host,
            "pid": beat.pid,
            "workers": beat.workers,
            "started_at": beat.started_at.isoformat(),
            "uptime_seconds": round((now - beat.started_at).total_seconds()),
            "uptime": duration(now - beat.started_at),
            "last_seen_seconds_ago": round((now - beat.last_seen).total_seconds(), 1),
            "alive": _alive(beat, now),
        }
        for beat in ClusterHeartbeat.objects.all()
    ]


def kind_section(window: Window) -> list[dict]:
    """Jobs finished in the window by queue and kind, with their wait and run percentiles."""
    tallies = window_by(window.since, "queue", "kind", tail=window.tail, timings=True)
    return [
        {
            "queue": queue,
            "kind": kind,
            "jobs": tally.count,
            "wait_p50": _seconds(tally.percentile("wait", 0.5)),
            "wait_p95": _seconds(tally.percentile("wait", 0.95)),
            "run_p50": _seconds(tally.percentile("run", 0.5)),
            "run_p95": _seconds(tally.percentile("run", 0.95)),
        }
        for (queue, kind), tally in sorted(tallies.items())
    ]


def failure_class_section(window: Window) -> list[dict]:
    """Failures in the window by queue and error class, most first, linking to the history."""
    tallies = window_by(window.since, "queue", "status", "error_class", tail=window.tail)
    return [
        {
            "queue": queue,
            "error_class": error_class,
            "label": failed_as(error_class),
            "jobs": tally.count,
            "url": _history_url(queue=queue, status="failed", error_class=error_class),
        }
        for (queue, status, error_class), tally in sorted(tallies.items(), key=lambda item: -item[1].count)
        if status == JobRecord.Status.FAILED
    ]


def recent_failure_section() -> list[dict]:
    """The last RECENT_FAILURES failed jobs, their errors as sentences."""
    recent = (
        JobRecord.objects.failed()
        .order_by("-finished_at")
        .only("pk", "queue", "kind", "status", "attempts", "error_class", "last_error", "finished_at")[:RECENT_FAILURES]
    )
    return [
        {
            "id": job.pk,
            "queue": job.queue,
            "kind": job.kind,
            "error_class": job.error_class,
            "sentence": error_sentence(job.error_class, job.last_error, job.status, job.attempts),
            # Stored redacted; rows from before redaction existed are redacted here.
            "error": redaction.redact(job.last_error)[:300],
            "finished_at": job.finished_at.isoformat() if job.finished_at else None,
            "finished": f"{timezone.localtime(job.finished_at):%d %b %H:%M}" if job.finished_at else "",
            "url": reverse("admin:queueing_jobrecord_change", args=[job.pk]),
            "class_url": _history_url(status="failed", error_class=job.error_class),
            "class_label": failed_as(job.error_class),
        }
        for job in recent
    ]


def _queue_status(queue: str, problems: list) -> str:
    """The worst of the queue's own checks (cluster:, broker:, depth:, wait:, failures:)."""
    statuses = [check.status for check in problems if check.name.endswith(f":{queue}")]
    return max(statuses, key=health.SEVERITY.__getitem__, default=health.OK)


def _told(alert: Alert) -> str:
    """Whether a message went out: an alert counts the messages Telegram accepted
    (queueing.alerts); once due, with none accepted, say why nobody knows yet."""
    if alert.notifications:
        return ", operators told"
    if alert.last_notified_at is None:
        return ""
    if not settings.ALERT_CHAT_IDS:
        return ", nobody told (ALERT_CHAT_IDS is empty)"
    return ", nobody told yet (the message has not gone out)"


def _alerts(problems: list) -> list[dict]:
    """The crossed thresholds, with when each was first seen and whether the operators'
    chats have been told (queueing.alerts keeps that in Alert rows)."""
    active = {alert.key: alert for alert in Alert.objects.active()}
    result = []
    for check in problems:
        alert = active.get(check.name)
        note = ""
        if alert:
            note = f"since {timezone.localtime(alert.raised_at):%H:%M}"
            note += _told(alert)
        result.append(
            {
                "name": check.name,
                "level": check.status,
                "detail": redaction.redact(check.detail),
                "since": alert.raised_at.isoformat() if alert else None,
                "notified_at": alert.last_notified_at.isoformat() if alert and alert.last_notified_at else None,
                "note": note,
            }
        )
    return result


@require_safe
@permission_required(PERMISSION, raise_exception=True)
def dashboard_view(request: HttpRequest) -> HttpResponse:
    hours = _hours(request)
    window = Window.read(hours)
    data = dashboard_data(window)
    context = {
        **admin.site.each_context(request),
        "title": "Queue dashboard",
        "data": data,
        "chart": chart_svg(window.points),
        "windows": WINDOWS,
        "hours": hours,
        "history_url": reverse("admin:queueing_jobrecord_changelist"),
        "panels": [
            {"name": p.name, "title": p.title, "template": p.template, "data": data["panels"].get(p.name)}
            for p in panels.values()
        ],
    }
    partial = request.GET.get("partial") == "1"
    template = "admin/queueing/dashboard_body.html" if partial else "admin/queueing/dashboard.html"
    return TemplateResponse(request, template, context)


@require_safe
@permission_required(PERMISSION, raise_exception=True)
def dashboard_json(request: HttpRequest) -> JsonResponse:
    return JsonResponse(dashboard_data(Window.read(_hours(request))))
