"""Settings for bench.webhook: the project's own, plus the two baseline views of bench.urls."""

from config.settings import *  # noqa: F403

ROOT_URLCONF = "bench.urls"
