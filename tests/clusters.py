"""Real `manage.py qcluster` processes for end-to-end tests and benchmarks."""

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import redis
from django.db import connection
from django.utils import timezone
from django_q.brokers.redis_broker import Redis as RedisBroker

from queueing.models import ClusterHeartbeat, JobRecord

ROOT = Path(__file__).resolve().parent.parent


def database_url() -> str:
    """The URL of the database this process uses now (the test database under pytest)."""
    s = connection.settings_dict
    if s["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{s['NAME']}"
    auth = s["USER"] + (f":{s['PASSWORD']}" if s["PASSWORD"] else "")
    return f"postgres://{auth}@{s['HOST'] or 'localhost'}:{s['PORT'] or 5432}/{s['NAME']}"


def cluster_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE=os.environ.get("DJANGO_SETTINGS_MODULE", "tests.settings"),
        DATABASE_URL=database_url(),
        QUEUE_LOG_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


class ClusterProcess:
    """One qcluster for one queue, in its own process group so a test can kill all of it."""

    def __init__(self, queue: str, log_dir: Path, **env: str):
        self.queue = queue
        self.log_path = log_dir / f"qcluster-{queue}-{time.monotonic_ns()}.log"
        self.env = cluster_env(Q_CLUSTER_NAME=queue, **env)
        self.process: subprocess.Popen | None = None

    def start(self, wait: float = 30) -> "ClusterProcess":
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "qcluster"],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if b"running." in self.log_path.read_bytes():
                return self
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"qcluster {self.queue} did not start:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, wait: float = 30) -> int | None:
        """SIGTERM, as supervisor stops it: running jobs finish first."""
        if not self.process or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(wait)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError(f"qcluster {self.queue} ignored SIGTERM for {wait} s:\n{self.log()}") from None

    def kill(self) -> None:
        """SIGKILL to every process of the cluster at once, like a machine losing power."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


class Machine:
    """The clusters one machine runs, as `manage.py qcluster` runs them, against the database
    and Redis every machine shares: with a MACHINE_NAME and the folders a machine has of its
    own (VAR_DIR, and the media, downloads, static and Prometheus folders under it)."""

    def __init__(self, name: str, folder: Path, queues: tuple[str, ...] = ("telegram", "broadcasts"), **env: str):
        self.name = name
        folder.mkdir(parents=True, exist_ok=True)
        own = {
            "MACHINE_NAME": name,
            "VAR_DIR": str(folder),
            **{setting: str(folder / sub) for setting, sub in self.FOLDERS.items()},
        }
        self.clusters = [ClusterProcess(queue, folder, **{**own, **env}) for queue in queues]

    # What config.settings would put under VAR_DIR; set explicitly, since this process's own
    # settings export some of them (PROMETHEUS_MULTIPROC_DIR) into the environment clusters inherit.
    FOLDERS = {
        "MEDIA_ROOT": "media",
        "DOWNLOADS_ROOT": "downloads",
        "STATIC_ROOT": "static",
        "PROMETHEUS_MULTIPROC_DIR": "prometheus",
    }

    def start(self) -> "Machine":
        for cluster in self.clusters:
            cluster.start()
        return self

    def stop(self) -> None:
        for cluster in self.clusters:
            try:
                cluster.stop()
            except RuntimeError:
                cluster.kill()

    def kill(self) -> None:
        """SIGKILL to every process of every cluster at once: the machine lost power."""
        alive = [c.process for c in self.clusters if c.process and c.process.poll() is None]
        for process in alive:
            os.killpg(process.pid, signal.SIGKILL)
        for process in alive:
            process.wait(10)

    def log(self) -> str:
        return "\n".join(f"--- {self.name}: qcluster {c.queue}\n{c.log()}" for c in self.clusters)


def machine_running(machines: list[Machine], queue: str) -> Machine | None:
    """The machine whose worker has been running a job of `queue` the longest (the job history
    says which): a broadcast's sender, not a job that is about to defer for the sender's lock."""
    running = JobRecord.objects.filter(queue=queue, status=JobRecord.Status.RUNNING).order_by("started_at")
    by_name = {machine.name: machine for machine in machines}
    for worker in running.values_list("worker", flat=True):
        if machine := by_name.get(worker.rpartition(":")[0]):
            return machine
    return None


def telegram_cluster_alive() -> None:
    now = timezone.now()
    ClusterHeartbeat.objects.create(
        queue="telegram", host="elsewhere", pid=1, workers=1, started_at=now, last_seen=now + timedelta(hours=1)
    )


class UnreachableRedis(RedisBroker):
    """A Redis broker for a port where nothing listens."""

    @staticmethod
    def get_connection(list_key: str | None = None) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
