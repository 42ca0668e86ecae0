"""supervisor/platform.conf runs the web process and one qcluster per queue, and stops each
gracefully: supervisor waits longer than the queue's timeout, so a running job can finish."""

import configparser
import re

from django.conf import settings

from tests.clusters import ROOT


def programs() -> dict[str, configparser.SectionProxy]:
    config = configparser.RawConfigParser()
    config.read(ROOT / "supervisor" / "platform.conf")
    return {name.removeprefix("program:"): config[name] for name in config.sections() if name.startswith("program:")}


def cluster_name(program: configparser.SectionProxy) -> str:
    match = re.search(r'Q_CLUSTER_NAME="(\w+)"', program.get("environment", ""))
    return match.group(1) if match else settings.Q_CLUSTER["name"]


def test_there_is_a_web_program_and_one_qcluster_program_per_queue_and_the_default():
    clusters = {name: p for name, p in programs().items() if p["command"].endswith("manage.py qcluster")}
    assert "gunicorn config.wsgi:application" in programs()["web"]["command"]
    assert sorted(cluster_name(p) for p in clusters.values()) == sorted([*settings.QUEUES, "default"])


def test_each_cluster_is_given_longer_to_stop_than_its_queue_timeout_then_killed_with_its_workers():
    timeouts = {"default": settings.Q_CLUSTER["timeout"]} | {q: c["timeout"] for q, c in settings.QUEUES.items()}
    for name, program in programs().items():
        if name == "web":
            continue
        queue = cluster_name(program)
        assert int(program["stopwaitsecs"]) > timeouts[queue], f"{name} is killed before a {queue} job can finish"
        assert program["stopsignal"] == "TERM"
        # SIGTERM to the cluster's main process only: it stops its own workers in order.
        assert program["stopasgroup"] == "false"
        assert program["killasgroup"] == "true", f"{name} would leave orphaned workers after a SIGKILL"


def test_every_program_restarts_and_logs_to_its_own_file():
    logs = [program["stdout_logfile"] for program in programs().values()]
    assert len(set(logs)) == len(logs)
    for name, program in programs().items():
        assert program["autorestart"] == "true", name
        assert program["redirect_stderr"] == "true", name
