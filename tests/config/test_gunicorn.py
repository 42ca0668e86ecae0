"""gunicorn (config/gunicorn.py) loads the project once, in its master, and forks the workers
from it: a worker replacing one that reached max_requests answers at once instead of importing
Django and every view first, and the loading opens nothing the workers would then share. A
worker that served its share exits without the interpreter's finalization."""

import json
import logging
import os
import re
import runpy
import signal
import socket
import subprocess
import sys
import time
import types
import urllib.request

import pytest
from django.db import connections

from bots import views
from bots.models import Bot, Update
from tests.clusters import ROOT, cluster_env

SECRET = "gunicorn-test-secret"

# What gunicorn's master does with preload_app, then what it holds open and has imported.
LOADED_IN_THE_MASTER = """
import json, os, sys
import config.wsgi
from django.db import connections

def opened(fd):
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except FileNotFoundError:  # the listing's own descriptor, closed meanwhile
        return ""

print(json.dumps({
    "sockets": [name for name in map(opened, os.listdir("/proc/self/fd")) if name.startswith("socket:")],
    "database_connections": [c.alias for c in connections.all() if c.connection is not None],
    "views_imported": "bots.views" in sys.modules and "broadcasts.clicks" in sys.modules,
}))
"""


def test_loading_the_project_in_the_master_opens_no_connection_and_imports_every_view(tmp_path):
    """A socket or database connection opened in the master would be shared by every forked
    worker, interleaving their queries on one connection."""
    result = subprocess.run(
        [sys.executable, "-c", LOADED_IN_THE_MASTER],
        cwd=ROOT,
        env=cluster_env(PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prometheus")),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded == {"sockets": [], "database_connections": [], "views_imported": True}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def gunicorn(transactional_db, tmp_path):
    """`gunicorn -c config/gunicorn.py` with 2 workers, each replaced after 4 to 6 requests."""
    port = free_port()
    log_path = tmp_path / "gunicorn.log"
    env = cluster_env(
        BIND=f"127.0.0.1:{port}",
        WEB_CONCURRENCY="2",
        WEB_MAX_REQUESTS="4",
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prometheus"),
    )
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.py", "config.wsgi:application"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while "Booting worker" not in log_path.read_text(errors="replace"):
            assert process.poll() is None and time.monotonic() < deadline, log_path.read_text(errors="replace")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}", process.pid, log_path
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def test_workers_replaced_after_max_requests_are_forks_of_the_loaded_master(gunicorn):
    url, master_pid, log_path = gunicorn
    views._bots.clear()
    bot = Bot.objects.create(token="123456:AAE-gunicorn", webhook_secret=SECRET)
    updates = 24
    for update_id in range(1, updates + 1):
        body = json.dumps({"update_id": update_id, "message": {"message_id": 1, "date": 0, "chat": {"id": 7}}})
        request = urllib.request.Request(
            url + bot.webhook_path(),
            data=body.encode(),
            headers={"Content-Type": "application/json", "X-Telegram-Bot-Api-Secret-Token": SECRET},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            assert response.status == 200

    log = log_path.read_text(errors="replace")
    assert log.count("Autorestarting worker") >= 2, log
    # Every update stored once, by workers of both generations on connections of their own.
    assert sorted(Update.objects.filter(bot=bot).values_list("update_id", flat=True)) == list(range(1, updates + 1))
    # django.setup() ran once, in the master: django-axes logs its start from each setup.
    set_up_by = {int(pid) for pid in re.findall(r"axes\.apps (\d+) AXES: BEGIN", log)}
    assert set_up_by == {master_pid}, log


@pytest.fixture
def gunicorn_config(monkeypatch):
    """config/gunicorn.py as gunicorn reads it, with os._exit recorded instead of done (and
    this process's connections and log handlers left open)."""
    config = runpy.run_path(str(ROOT / "config" / "gunicorn.py"))
    exits = []
    monkeypatch.setattr(os, "_exit", exits.append)
    monkeypatch.setattr(connections, "close_all", lambda: None)
    monkeypatch.setattr(logging, "shutdown", lambda: None)
    return config, exits


@pytest.mark.parametrize(
    ("booted", "status", "fast"),
    [(True, 0, True), (False, 0, False), (False, 3, False), (True, -1, False)],
    ids=["served its share", "stopped while booting", "boot error", "failed"],
)
def test_only_a_worker_leaving_normally_skips_the_interpreters_finalization(gunicorn_config, booted, status, fast):
    """gunicorn stops when a worker exits with its boot error status: that status must stay."""
    config, exits = gunicorn_config
    worker = types.SimpleNamespace(booted=booted)
    try:
        raise SystemExit(status)
    except SystemExit:
        config["worker_exit"](None, worker)
    assert exits == ([0] if fast else [])
