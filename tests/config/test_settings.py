"""Settings come from the environment: the database and broker it names, clear errors for bad values."""

import json
import subprocess
import sys

import pytest
from django.db import connection

from tests.clusters import ROOT

SHOW = """
import json, django
from django.conf import settings
django.setup()
db = settings.DATABASES["default"]
print(json.dumps({
    "engine": db["ENGINE"], "name": db["NAME"], "conn_max_age": db["CONN_MAX_AGE"],
    "broker": "redis" if "redis" in settings.Q_CLUSTER else settings.Q_CLUSTER.get("orm"),
    "redis": settings.Q_CLUSTER.get("redis"), "cache": settings.CACHES["default"]["BACKEND"],
    "telegram_workers": settings.Q_CLUSTER["ALT_CLUSTERS"]["telegram"]["workers"],
    "ssl_redirect": settings.SECURE_SSL_REDIRECT, "hsts_seconds": settings.SECURE_HSTS_SECONDS,
    "secure_cookies": [settings.SESSION_COOKIE_SECURE, settings.CSRF_COOKIE_SECURE],
}))
"""
PRODUCTION = {
    "DEBUG": "0",
    "SECRET_KEY": "a-long-random-production-key-" + "k3y" * 20,
    "ALLOWED_HOSTS": "bot.example.org",
}


def settings_with(tmp_path, *command: str, **env: str) -> subprocess.CompletedProcess:
    """config.settings loaded fresh in a process whose environment is only `env`, with a private
    VAR_DIR and the settings file tmp_path/.env (which need not exist): a developer's own .env
    never leaks in. It prints the settings SHOW reads, or runs the manage.py `command`."""
    return subprocess.run(
        [sys.executable, *(["manage.py", *command] if command else ["-c", SHOW])],
        cwd=ROOT,
        env={
            "PATH": "/usr/bin:/bin",
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "VAR_DIR": str(tmp_path),
            "ENV_FILE": str(tmp_path / ".env"),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )


def shown(tmp_path, **env: str) -> dict:
    result = settings_with(tmp_path, **env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_default_is_sqlite_in_the_var_folder_with_the_orm_broker(tmp_path):
    values = shown(tmp_path)
    assert values["engine"] == "django.db.backends.sqlite3"
    assert values["name"] == str(tmp_path / "db.sqlite3")
    assert values["broker"] == "default"
    assert values["cache"] == "django.core.cache.backends.filebased.FileBasedCache"


def test_database_url_and_redis_url_switch_to_postgresql_and_redis_with_persistent_connections(tmp_path):
    values = shown(
        tmp_path, DATABASE_URL="postgres://pledge@db.internal:5432/pledgebot", REDIS_URL="redis://cache.internal:6379/2"
    )
    assert values["engine"] == "django.db.backends.postgresql"
    assert values["name"] == "pledgebot"
    # django-q2's ORM broker and the workers reconnect on every poll with CONN_MAX_AGE=0.
    assert values["conn_max_age"] > 0
    assert values["broker"] == "redis"
    assert values["redis"] == "redis://cache.internal:6379/2"
    assert values["cache"] == "django.core.cache.backends.redis.RedisCache"


def test_queue_settings_come_from_the_environment(tmp_path):
    assert shown(tmp_path, QUEUE_TELEGRAM_WORKERS="9")["telegram_workers"] == 9


def test_the_env_file_fills_in_what_the_environment_does_not_set(tmp_path):
    (tmp_path / ".env").write_text("# production\nQUEUE_TELEGRAM_WORKERS=7\nREDIS_URL=redis://cache.internal:6379/3\n")
    values = shown(tmp_path, REDIS_URL="redis://other.internal:6379/4")
    assert values["telegram_workers"] == 7
    assert values["redis"] == "redis://other.internal:6379/4"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("QUEUE_TELEGRAM_WORKERS", "four", "QUEUE_TELEGRAM_WORKERS must be an integer, not 'four'"),
        ("QUEUE_TELEGRAM_BACKOFF", "5s", "QUEUE_TELEGRAM_BACKOFF must be a number, not '5s'"),
        ("DEBUG", "maybe", "DEBUG must be a boolean (1/0, true/false), not 'maybe'"),
    ],
)
def test_a_bad_value_stops_start_up_with_its_name_and_what_was_expected(tmp_path, name, value, message):
    result = settings_with(tmp_path, **{name: value})
    assert result.returncode != 0
    assert f"ImproperlyConfigured: {message}" in result.stderr


def test_production_settings_pass_check_deploy_with_no_warning_once_static_files_are_collected(tmp_path):
    before = settings_with(tmp_path, "check", "--deploy", "--fail-level", "WARNING", **PRODUCTION)
    assert before.returncode == 1 and "(config.W001) DEBUG=0 and no static files collected" in before.stderr

    # What collectstatic leaves for whitenoise (tests/config/test_static_check.py runs the real one).
    (tmp_path / "static" / "staticfiles.json").write_text('{"paths": {}, "version": "1.1"}')
    result = settings_with(tmp_path, "check", "--deploy", "--fail-level", "WARNING", **PRODUCTION)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


def test_production_redirects_to_https_with_hsts_and_secure_cookies(tmp_path):
    values = shown(tmp_path, **PRODUCTION)
    assert values["ssl_redirect"] is True
    assert values["hsts_seconds"] >= 365 * 24 * 3600
    assert values["secure_cookies"] == [True, True]


def test_a_plain_http_deployment_turns_redirect_hsts_and_secure_cookies_off_together(tmp_path):
    values = shown(tmp_path, **PRODUCTION, SECURE_SSL_REDIRECT="0")
    assert values["ssl_redirect"] is False
    assert values["hsts_seconds"] == 0
    assert values["secure_cookies"] == [False, False]


def test_debug_mode_stays_on_plain_http(tmp_path):
    values = shown(tmp_path, DEBUG="1")
    assert (values["ssl_redirect"], values["hsts_seconds"]) == (False, 0)


@pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite only")
@pytest.mark.django_db
def test_sqlite_is_shared_safely_by_web_and_clusters_in_wal_mode_with_a_busy_timeout():
    with connection.cursor() as cursor:
        assert cursor.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert cursor.execute("PRAGMA busy_timeout").fetchone()[0] >= 5000


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL only")
def test_postgresql_finds_the_connections_of_a_machine_that_lost_power_within_half_a_minute(db):
    """Their advisory locks (the inbox's dispatcher, a bot's broadcast sender) go with them."""
    with connection.cursor() as cursor:
        shown = {}
        for name in ("tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count"):
            cursor.execute(f"SHOW {name}")
            shown[name] = cursor.fetchone()[0]
    assert shown == {"tcp_keepalives_idle": "15", "tcp_keepalives_interval": "5", "tcp_keepalives_count": "3"}
