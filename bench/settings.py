"""Settings for bench.webhook: the project's own, plus the two baseline views of bench.urls.
Benchmarks speak plain HTTP on loopback, so no redirect to HTTPS."""

import os

os.environ.setdefault("SECURE_SSL_REDIRECT", "0")

from config.settings import *  # noqa: F403

ROOT_URLCONF = "bench.urls"
