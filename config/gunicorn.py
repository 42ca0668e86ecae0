"""gunicorn settings for the web process (admin and webhook), from the environment."""

import logging
import os
import shutil
import sys

import sentry_sdk
from django.conf import settings

bind = os.environ.get("BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "4"))
timeout = int(os.environ.get("WEB_TIMEOUT", "30"))
graceful_timeout = 20
# The master loads the project once (config.wsgi, URLconf included) and forks the workers from
# it. Without this, each worker replacing one that reached max_requests imported Django and the
# project for itself: over a second of CPU, 14 s on a loaded 2-CPU machine, and the workers,
# equally loaded, reach max_requests together: the webhook's p99 and even whole seconds without
# an answer (bench/webhook.py). Deploying new code needs a restart of the program, not a HUP.
preload_app = True
max_requests = int(os.environ.get("WEB_MAX_REQUESTS", "10000"))
# Spread so that the workers are not all replaced at the same moment.
max_requests_jitter = max_requests // 2
accesslog = os.environ.get("WEB_ACCESS_LOG", "-")
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")


def on_starting(server) -> None:
    """Request metrics of the previous server's workers would otherwise add up forever."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    shutil.rmtree(settings.PROMETHEUS_MULTIPROC_DIR, ignore_errors=True)
    settings.PROMETHEUS_MULTIPROC_DIR.mkdir(parents=True)


def worker_exit(server, worker) -> None:
    """A worker that served its share leaves at once. The interpreter's finalization freed the
    whole project object by object first: 3 s on a loaded machine before the master forked the
    replacement, 0.2 s this way. Its connections are closed and its output flushed before; a
    worker that failed keeps the exit status the master acts on (a boot error stops gunicorn)."""
    from django.db import connections

    leaving = sys.exc_info()[1]
    if not (worker.booted and isinstance(leaving, SystemExit) and leaving.code == 0):
        return
    connections.close_all()
    sentry_sdk.flush()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
