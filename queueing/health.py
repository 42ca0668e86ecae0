"""Is the platform up? `liveness()` checks the database, each queue's broker and that each
queue has a live cluster: cheap enough for a load balancer to poll every second. `detailed()`
adds what degrades service without stopping it: disk space, failures, backlog. Reports name
components only, never a URL, host or credential."""

import logging
import shutil
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.core.cache import cache
from django.db import connection

from queueing.circuit import open_circuits
from queueing.heartbeat import alive_clusters
from queueing.queues import broker_for, queue_names
from queueing.stats import failure_rates, queues_now

logger = logging.getLogger(__name__)

OK, DEGRADED, DOWN = "ok", "degraded", "down"
SEVERITY = {OK: 0, DEGRADED: 1, DOWN: 2}


@dataclass
class Check:
    name: str
    status: str
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == OK


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)

    @property
    def status(self) -> str:
        return max((check.status for check in self.checks), key=SEVERITY.__getitem__, default=OK)

    @property
    def exit_code(self) -> int:
        return SEVERITY[self.status]

    @property
    def problems(self) -> list[Check]:
        return [check for check in self.checks if not check.ok]

    def as_dict(self) -> dict:
        return {"status": self.status, "checks": [asdict(check) for check in self.checks]}


def check_database() -> Check:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:
        return Check("database", DOWN, f"unreachable ({type(exc).__name__})")
    return Check("database", OK)


def check_broker(queue: str) -> Check:
    name = f"broker:{queue}"
    try:
        broker_for(queue).ping()
    except Exception as exc:
        return Check(name, DOWN, f"unreachable ({type(exc).__name__})")
    return Check(name, OK)


def check_clusters() -> list[Check]:
    alive: dict[str, int] = {}
    for queue in alive_clusters().values_list("queue", flat=True):
        alive[queue] = alive.get(queue, 0) + 1
    return [
        Check(f"cluster:{queue}", OK, f"{alive[queue]} alive")
        if alive.get(queue)
        else Check(f"cluster:{queue}", DOWN, f"no cluster has beaten in {settings.HEARTBEAT_TIMEOUT:g} s")
        for queue in queue_names()
    ]


def liveness() -> Report:
    database = check_database()
    report = Report([database, *(check_broker(queue) for queue in queue_names())])
    if database.ok:
        report.checks += check_clusters()
    return report


def check_disk(path: Path) -> Check:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free_mb = shutil.disk_usage(probe).free // (1024 * 1024)
    if free_mb < settings.ALERT_DISK_FREE_MB:
        return Check("disk:downloads", DEGRADED, f"{free_mb} MB free, below {settings.ALERT_DISK_FREE_MB} MB")
    return Check("disk:downloads", OK, f"{free_mb} MB free")


def check_backlog() -> list[Check]:
    checks = []
    for queue, now in queues_now().items():
        wait = now.oldest_wait or 0
        if now.queued > settings.ALERT_QUEUE_DEPTH:
            checks.append(Check(f"depth:{queue}", DEGRADED, f"{now.queued} queued, over {settings.ALERT_QUEUE_DEPTH}"))
        if wait > settings.ALERT_OLDEST_WAIT:
            detail = f"oldest job waits {wait:.0f} s, over {settings.ALERT_OLDEST_WAIT:g} s"
            checks.append(Check(f"wait:{queue}", DEGRADED, detail))
    return checks


def check_failures(tail: dict | None = None, rates: dict[str, tuple[int, int]] | None = None) -> list[Check]:
    """Failures in the last hour, per queue: degraded when their share of finished jobs
    crosses ALERT_FAILURE_RATE (a few blocked members are no reason to wake anyone).
    `rates` is queueing.stats.failure_rates() of the last hour, when the caller has it."""
    checks = []
    for queue, (failed, finished) in (rates or failure_rates(timedelta(hours=1), tail)).items():
        rate = failed / finished if finished else 0.0
        detail = f"{failed} of {finished} finished jobs failed in the last hour"
        crossed = finished >= settings.ALERT_FAILURE_MIN_JOBS and rate > settings.ALERT_FAILURE_RATE
        checks.append(Check(f"failures:{queue}", DEGRADED if crossed else OK, detail))
    return checks


def check_circuits() -> list[Check]:
    """Services that stopped answering (queueing.circuit): work waits for them."""
    return [
        Check(f"outage:{c.key}", DEGRADED, f"unreachable since {c.opened_at:%Y-%m-%d %H:%M:%S} ({c.reason})")
        for c in open_circuits()
    ]


def detailed(tail: dict | None = None, rates: dict[str, tuple[int, int]] | None = None) -> Report:
    """`tail` is queueing.stats.unrolled() and `rates` the last hour's failure_rates(),
    when the caller has them."""
    report = liveness()
    report.checks.append(check_disk(settings.DOWNLOADS_ROOT))
    if report.checks[0].ok:
        report.checks += [*check_backlog(), *check_failures(tail, rates), *check_circuits()]
    return report


# The last liveness state this process saw; the cache holds the last one any web process logged.
_seen: dict[str, tuple[str, ...]] = {}
STATE_CACHE_KEY = "queueing:healthz:state"


def log_change(report: Report) -> bool:
    """Log the liveness state when it changes (up -> down with the reasons, other reasons,
    and back up), once for all the web processes as far as the shared cache allows, rather
    than an error for every 503 of a probe polling each second. Returns whether it logged."""
    state = (report.status, *sorted(check.name for check in report.problems))
    if _seen.get("state") == state:
        return False
    _seen["state"] = state
    try:
        if cache.get(STATE_CACHE_KEY) == list(state):
            return False
        cache.set(STATE_CACHE_KEY, list(state), timeout=None)
    except Exception:  # the cache (Redis) is away: log from this process regardless
        pass
    if report.status == DOWN:
        reasons = "; ".join(f"{check.name}: {check.detail}" for check in report.problems)
        logger.error("Health: down (%s)", reasons)
    else:
        logger.warning("Health: up (database, brokers and clusters alive)")
    return True
