"""gunicorn settings for the web process (admin and webhook), from the environment."""

import os
import shutil

from django.conf import settings

bind = os.environ.get("BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "4"))
timeout = int(os.environ.get("WEB_TIMEOUT", "30"))
graceful_timeout = 20
max_requests = 10000
max_requests_jitter = 1000
accesslog = os.environ.get("WEB_ACCESS_LOG", "-")
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")


def on_starting(server) -> None:
    """Request metrics of the previous server's workers would otherwise add up forever."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    shutil.rmtree(settings.PROMETHEUS_MULTIPROC_DIR, ignore_errors=True)
    settings.PROMETHEUS_MULTIPROC_DIR.mkdir(parents=True)
