"""The project's settings, pointed at throwaway places so a test run never touches a
developer's data: var/test for SQLite and caches, Redis database 15.

Under pytest-xdist each worker (gw0, gw1, …) gets its own folder and Redis database
(15, 14, …); pytest-django gives it its own test database. The qcluster processes a
test starts inherit the worker's environment, so they land in the same places."""

import os
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

os.environ.setdefault("VAR_DIR", str(Path(__file__).resolve().parent.parent / "var" / "test"))
os.environ.setdefault("REDIS_TEST_DB", "15")
# The live servers and fake Telegram speak plain HTTP (production's HSTS and redirect follow this).
os.environ.setdefault("SECURE_SSL_REDIRECT", "0")
_worker = os.environ.get("PYTEST_XDIST_WORKER")
if _worker and os.environ.get("TEST_WORKER_PLACES") != _worker:
    os.environ["TEST_WORKER_PLACES"] = _worker
    os.environ["VAR_DIR"] = str(Path(os.environ["VAR_DIR"]) / _worker)
    os.environ["REDIS_TEST_DB"] = str(int(os.environ["REDIS_TEST_DB"]) - int(_worker.removeprefix("gw")))
    # The controller's settings exported its own folders; each worker's derive from its VAR_DIR.
    for name in ("PROMETHEUS_MULTIPROC_DIR", "MEDIA_ROOT", "STATIC_ROOT", "DOWNLOADS_ROOT"):
        os.environ.pop(name, None)
if os.environ.get("REDIS_URL"):
    parts = urlsplit(os.environ["REDIS_URL"])
    os.environ["REDIS_URL"] = urlunsplit(parts._replace(path=f"/{os.environ['REDIS_TEST_DB']}"))

from config.settings import *  # noqa: E402, F403

QUEUEING_JOB_MODULES = ["tests.jobs"]
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Pages render without `collectstatic` having run.
STORAGES = {**STORAGES, "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}  # noqa: F405
if os.environ.get("TEST_DUTY_HOLDS_WRITE_LOCK"):
    INSTALLED_APPS = [*INSTALLED_APPS, "tests.write_lock_duty.WriteLockDuty"]  # noqa: F405
