"""The project's settings, pointed at throwaway places so a test run never touches a
developer's data: var/test for SQLite and caches, Redis database 15."""

import os
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

os.environ.setdefault("VAR_DIR", str(Path(__file__).resolve().parent.parent / "var" / "test"))
if os.environ.get("REDIS_URL"):
    parts = urlsplit(os.environ["REDIS_URL"])
    os.environ["REDIS_URL"] = urlunsplit(parts._replace(path=f"/{os.environ.get('REDIS_TEST_DB', '15')}"))

from config.settings import *  # noqa: F403

QUEUEING_JOB_MODULES = ["tests.jobs"]
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Pages render without `collectstatic` having run.
STORAGES = {**STORAGES, "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}  # noqa: F405
