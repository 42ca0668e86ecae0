"""Settings for the whole platform. Every value comes from the environment; a `.env`
file in the project folder (or the file ENV_FILE names) fills in what it does not set."""

import os
import socket
from datetime import timedelta
from pathlib import Path

import dj_database_url
from dotenv import load_dotenv

from config.env import env_bool, env_float, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
load_dotenv(os.environ.get("ENV_FILE") or BASE_DIR / ".env")

VAR_DIR = Path(env_str("VAR_DIR", str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)
# What this machine's processes are called in the job history, heartbeats and delivery claims.
# Each machine sharing the database needs its own: a worker on another machine is known dead
# only when that machine's clusters stop beating (queueing.housekeeping).
MACHINE_NAME = env_str("MACHINE_NAME", socket.gethostname())

DEBUG = env_bool("DEBUG", False)
# A laptop run needs no set-up; production sets SECRET_KEY and `check --deploy` insists on it.
SECRET_KEY = env_str("SECRET_KEY", "insecure-dev-key-set-SECRET_KEY-in-production")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    # queueing first: its `qcluster` command replaces django-q2's.
    "queueing",
    "bots",
    "broadcasts",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_q",
    "axes",
    "config",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Counts requests and their latency per view (the webhook's among them) for /metrics.
    "queueing.metrics.RequestMetricsMiddleware",
    # Serves the admin's static files under gunicorn, with no separate web server.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: it answers a locked-out login with 429.
    "axes.middleware.AxesMiddleware",
]

AUTHENTICATION_BACKENDS = [
    # First: refuses a locked-out IP address or user name before any password is checked.
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# Database: SQLite in WAL mode by default, so web and several qcluster processes
# share it; PostgreSQL with DATABASE_URL=postgres://...
DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}")
DATABASES = {"default": dj_database_url.parse(DATABASE_URL)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {
        "init_command": (
            "PRAGMA journal_mode=WAL;"
            f"PRAGMA synchronous={env_str('SQLITE_SYNCHRONOUS', 'FULL')};"
            "PRAGMA busy_timeout=20000;"
        ),
        # Writers take the lock at BEGIN, so two processes never deadlock upgrading a read lock.
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-db.sqlite3")}
else:
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    # A machine that loses power leaves its connections open on the server, with every advisory
    # lock they hold (the inbox's dispatcher, a bot's broadcast sender), until the server finds
    # them dead: after Linux's two hours of TCP silence by default, after about 30 s with these.
    # DATABASE_KEEPALIVES=0 leaves them out, for a pooler that refuses startup options (PgBouncer).
    if env_bool("DATABASE_KEEPALIVES", True):
        options = DATABASES["default"].setdefault("OPTIONS", {})
        keepalives = "-c tcp_keepalives_idle=15 -c tcp_keepalives_interval=5 -c tcp_keepalives_count=3"
        options["options"] = f"{options.get('options', '')} {keepalives}".strip()
# django-q2's ORM broker polls several times a second and closes stale connections around
# each enqueue: reconnecting each time (and, on SQLite, checkpointing the WAL on close)
# would dominate. Measured by bench/queue_throughput.py: SQLite enqueue 466/s -> 1,103/s.
DATABASES["default"]["CONN_MAX_AGE"] = env_int("CONN_MAX_AGE", 300)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env_str("REDIS_URL")
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    # Shared by every process on the machine (django-q2 keeps cluster heartbeats in the cache).
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(VAR_DIR / "cache"),
        }
    }

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# What the bot says to members is translated (bots.languages picks the member's language);
# each app keeps its own catalogue in <app>/locale, found by Django without LOCALE_PATHS. The
# admin has no LocaleMiddleware: operators read it in LANGUAGE_CODE.
LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("fr", "Français")]
USE_I18N = True
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_TZ = True

MEDIA_URL = "media/"
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(VAR_DIR / "media")))

STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(VAR_DIR / "static")))
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

LOGIN_URL = "admin:login"

# Production hardening: on whenever DEBUG is off, so `manage.py check --deploy` passes with
# no warning. The TLS proxy in front must set X-Forwarded-Proto. A plain-HTTP deployment sets
# SECURE_SSL_REDIRECT=0, which turns HSTS and secure cookies off with it.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
# Load balancers and Prometheus often probe the web process directly, over plain HTTP.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 365 * 24 * 3600 if SECURE_SSL_REDIRECT else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", True)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", SECURE_SSL_REDIRECT)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", SECURE_SSL_REDIRECT)
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

# Admin login protection (django-axes): after LOGIN_FAILURE_LIMIT wrong passwords from one IP
# address, or for one user name, that address or name is refused for LOGIN_COOLOFF_MINUTES.
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=env_float("LOGIN_COOLOFF_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = ["ip_address", "username"]
AXES_RESET_ON_SUCCESS = True
# Proxies in front of gunicorn (nginx: 1) whose X-Forwarded-For tells the client's address;
# with none, whatever a client sends there is ignored (config.login).
LOGIN_PROXY_COUNT = env_int("LOGIN_PROXY_COUNT", 0)
AXES_CLIENT_IP_CALLABLE = "config.login.client_ip"

# Telegram
TELEGRAM_BOT_TOKEN = env_str("TELEGRAM_BOT_TOKEN")
TELEGRAM_WEBHOOK_SECRET = env_str("TELEGRAM_WEBHOOK_SECRET")
TELEGRAM_API_BASE_URL = env_str("TELEGRAM_API_BASE_URL", "https://api.telegram.org/bot")
TELEGRAM_RATE_LIMIT = env_float("TELEGRAM_RATE_LIMIT", 30)
TELEGRAM_PAID_RATE_LIMIT = env_float("TELEGRAM_PAID_RATE_LIMIT", 1000)
# Telegram counts in sliding windows: replies and broadcasts pace this much under the limit, which
# lets a broadcast that fell behind catch up and leaves slack for jitter (broadcasts.sending.Departures).
TELEGRAM_RATE_MARGIN = env_float("TELEGRAM_RATE_MARGIN", 0.005)
# Seconds the Bot API client waits: to connect, for an answer, for the answer to an upload. A
# request that got no answer may have been delivered, so it is never sent again blindly.
TELEGRAM_CONNECT_TIMEOUT = env_float("TELEGRAM_CONNECT_TIMEOUT", 5)
TELEGRAM_READ_TIMEOUT = env_float("TELEGRAM_READ_TIMEOUT", 15)
TELEGRAM_UPLOAD_TIMEOUT = env_float("TELEGRAM_UPLOAD_TIMEOUT", 60)
# While Telegram is unreachable, work waits; one probe goes out at most this often (seconds).
TELEGRAM_OUTAGE_PROBE_MAX = env_float("TELEGRAM_OUTAGE_PROBE_MAX", 30)
# A member's update still unanswered after this long an outage is given up (Telegram itself
# keeps undelivered updates 24 hours).
TELEGRAM_OUTAGE_HORIZON = env_int("TELEGRAM_OUTAGE_HORIZON", 24 * 3600)
# Members whose Telegram ids receive the "staff only" test broadcasts.
OPERATOR_TELEGRAM_IDS = [int(i) for i in env_list("OPERATOR_TELEGRAM_IDS")]
PUBLIC_URL = env_str("PUBLIC_URL")
PLEDGE_DEFAULT_CURRENCY = env_str("PLEDGE_DEFAULT_CURRENCY", "USD")
# A broadcast needs another operator's approval before it is sent or scheduled.
BROADCAST_APPROVAL = env_bool("BROADCAST_APPROVAL", False)

# Media downloads (yt-dlp) on the downloads queue.
DOWNLOADS_ROOT = Path(env_str("DOWNLOADS_ROOT", str(VAR_DIR / "downloads")))
# Telegram's upload limit: 50 MB on the public Bot API, up to 2000 MB on a local Bot API server.
DOWNLOADS_MAX_BYTES = env_int("DOWNLOADS_MAX_BYTES", 50 * 1024 * 1024)
DOWNLOADS_TIMEOUT = env_int("DOWNLOADS_TIMEOUT", 300)
DOWNLOADS_SOCKET_TIMEOUT = env_float("DOWNLOADS_SOCKET_TIMEOUT", 20)
DOWNLOADS_ALLOW_PRIVATE_HOSTS = env_bool("DOWNLOADS_ALLOW_PRIVATE_HOSTS", False)
URL_SAFETY_TREAT_AS_PUBLIC: list[str] = []  # Test-only: loopback addresses the SSRF guard lets through as public.
DOWNLOADS_PER_MEMBER_DAILY = env_int("DOWNLOADS_PER_MEMBER_DAILY", 20)
DOWNLOADS_MAX_WAITING = env_int("DOWNLOADS_MAX_WAITING", 3)
DOWNLOADS_PROGRESS_SECONDS = env_float("DOWNLOADS_PROGRESS_SECONDS", 3)

SENTRY_DSN = env_str("SENTRY_DSN")
METRICS_TOKEN = env_str("METRICS_TOKEN")
# Every web worker (gunicorn forks several) adds its request metrics to files here, which
# /metrics sums; gunicorn empties the folder when it starts (config/gunicorn.py).
PROMETHEUS_MULTIPROC_DIR = Path(env_str("PROMETHEUS_MULTIPROC_DIR", str(VAR_DIR / "prometheus")))
PROMETHEUS_MULTIPROC_DIR.mkdir(parents=True, exist_ok=True)
os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(PROMETHEUS_MULTIPROC_DIR)

# Operations: a cluster whose heartbeat is older than HEARTBEAT_TIMEOUT seconds is dead.
# The ALERT_ values are the thresholds of the dashboard's banners, health and alert messages.
HEARTBEAT_TIMEOUT = env_float("HEARTBEAT_TIMEOUT", 15)
ALERT_QUEUE_DEPTH = env_int("ALERT_QUEUE_DEPTH", 1000)
ALERT_OLDEST_WAIT = env_float("ALERT_OLDEST_WAIT", 300)
ALERT_FAILURE_RATE = env_float("ALERT_FAILURE_RATE", 0.2)
# Below this many finished jobs in the hour, a failure rate says little.
ALERT_FAILURE_MIN_JOBS = env_int("ALERT_FAILURE_MIN_JOBS", 20)
ALERT_DISK_FREE_MB = env_int("ALERT_DISK_FREE_MB", 1024)
# Operators' Telegram chats (numeric ids: people, groups, channels) told of alerts by the bot, through the
# telegram queue: when a threshold has been crossed ALERT_RAISE_AFTER seconds, again every
# ALERT_REPEAT_MINUTES while it lasts (0: never), and once it has been clear ALERT_RESOLVE_AFTER
# seconds. The default cluster evaluates the thresholds every ALERT_EVALUATE_SECONDS.
ALERT_CHAT_IDS = [int(i) for i in env_list("ALERT_CHAT_IDS")]
ALERT_RAISE_AFTER = env_float("ALERT_RAISE_AFTER", 30)
ALERT_REPEAT_MINUTES = env_float("ALERT_REPEAT_MINUTES", 60)
ALERT_RESOLVE_AFTER = env_float("ALERT_RESOLVE_AFTER", 60)
ALERT_EVALUATE_SECONDS = env_float("ALERT_EVALUATE_SECONDS", 10)
# The default cluster deletes finished jobs older than this many days (0: keeps them for ever).
JOB_HISTORY_DAYS = env_int("JOB_HISTORY_DAYS", 30)

# Queues: one django-q2 cluster each (ALT_CLUSTERS), started by `Q_CLUSTER_NAME=<queue> manage.py qcluster`.
# `retries` counts runs after the first; the n-th retry waits backoff * 3**(n-1) seconds, +-10% jitter.
QUEUES = {
    "telegram": {
        "workers": env_int("QUEUE_TELEGRAM_WORKERS", 4),
        "timeout": env_int("QUEUE_TELEGRAM_TIMEOUT", 30),
        "retries": env_int("QUEUE_TELEGRAM_RETRIES", 3),
        "backoff": env_float("QUEUE_TELEGRAM_BACKOFF", 5),
    },
    "broadcasts": {
        "workers": env_int("QUEUE_BROADCASTS_WORKERS", 2),
        "timeout": env_int("QUEUE_BROADCASTS_TIMEOUT", 300),
        "retries": env_int("QUEUE_BROADCASTS_RETRIES", 3),
        "backoff": env_float("QUEUE_BROADCASTS_BACKOFF", 5),
    },
    "downloads": {
        "workers": env_int("QUEUE_DOWNLOADS_WORKERS", 2),
        "timeout": env_int("QUEUE_DOWNLOADS_TIMEOUT", 600),
        "retries": env_int("QUEUE_DOWNLOADS_RETRIES", 2),
        "backoff": env_float("QUEUE_DOWNLOADS_BACKOFF", 5),
    },
}
# Extra modules whose @job functions a worker may run (kinds outside the apps' tasks.py).
QUEUEING_JOB_MODULES = env_list("QUEUEING_JOB_MODULES")


def _cluster(workers: int, timeout: int) -> dict:
    return {
        "workers": workers,
        "timeout": timeout,
        # The ORM broker hands a task out again once `retry` passes without an ack:
        # keep that beyond the timeout so a slow job never runs twice.
        "retry": timeout + 60,
        # queueing does retries itself; 0 here would make django-q2 redeliver failures forever.
        "max_attempts": 1,
        "ack_failures": True,
        # Prefetch no more than the workers can start, so a dead cluster loses little.
        "queue_limit": workers,
        # JobRecord is the history; django-q2's own Success table is not written.
        "save_limit": -1,
        "recycle": 1000,
    }


Q_CLUSTER = {
    "name": "default",
    **_cluster(workers=env_int("QUEUE_DEFAULT_WORKERS", 1), timeout=env_int("QUEUE_DEFAULT_TIMEOUT", 120)),
    "catch_up": False,
    "poll": env_float("QUEUE_POLL_SECONDS", 0.2),
    "ALT_CLUSTERS": {name: _cluster(q["workers"], q["timeout"]) for name, q in QUEUES.items()},
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s"}},
    # On every handler: no secret leaves in a log line, whichever logger wrote it.
    "filters": {"redact_secrets": {"()": "queueing.redaction.RedactingFilter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["redact_secrets"]}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        # Without Django's own handlers (which have no redaction): its records go to the root's.
        "django": {"level": "INFO"},
        "django-q": {"level": env_str("QUEUE_LOG_LEVEL", "WARNING")},
        # httpx logs every request URL at INFO, and Bot API URLs contain the bot's token.
        "httpx": {"level": "WARNING"},
    },
}

if SENTRY_DSN:
    from queueing.sentry import init_sentry

    init_sentry(SENTRY_DSN)
