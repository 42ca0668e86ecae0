"""Sentry: jobs report their failures with the job's queue, kind, attempt and id; permanent
per-member errors and flood control are not sent; nothing starts without SENTRY_DSN."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import sentry_sdk
import telegram.error

from queueing.errors import PermanentError, RateLimited, RetriableError
from queueing.jobs import job
from queueing.models import JobRecord
from queueing.runner import run_job
from queueing.sentry import init_sentry
from tests.sentry_capture import DSN


@job(queue="telegram")
def raise_this(kind: str):
    raise {
        "retriable": RetriableError("the archive timed out"),
        "permanent": PermanentError("not a member"),
        "forbidden": telegram.error.Forbidden("Forbidden: bot was blocked by the user"),
        "chat_not_found": telegram.error.BadRequest("Bad Request: chat not found"),
        "retry_after": telegram.error.RetryAfter(5),
        "rate_limited": RateLimited(5),
    }[kind]


def run(kind: str) -> JobRecord:
    record = JobRecord.objects.create(queue="telegram", kind=raise_this.kind, args=[kind], max_attempts=3)
    run_job(record.pk, str(record.dispatch_id))
    record.refresh_from_db()
    return record


@pytest.mark.django_db
def test_a_retriable_failure_is_reported_with_the_job(sentry):
    record = run("retriable")
    assert record.status == JobRecord.Status.RETRYING
    sentry_sdk.flush()
    [event] = sentry.events
    assert event["exception"]["values"][-1]["type"] == "RetriableError"
    assert event["tags"]["queue"] == "telegram"
    assert event["tags"]["job.kind"] == raise_this.kind
    assert str(event["tags"]["job.attempt"]) == "1"
    assert str(event["tags"]["job.id"]) == str(record.pk)
    assert event["contexts"]["job"]["id"] == record.pk
    assert event["contexts"]["job"]["attempt"] == 1


@pytest.mark.django_db
def test_the_job_scope_ends_with_the_job(sentry):
    run("retriable")
    sentry_sdk.capture_message("after the job")
    sentry_sdk.flush()
    after = sentry.events[-1]
    assert after["message"] == "after the job"
    assert "job.kind" not in after.get("tags", {}) and "job" not in after.get("contexts", {})


@pytest.mark.django_db
@pytest.mark.parametrize("kind", ["permanent", "forbidden", "chat_not_found", "retry_after", "rate_limited"])
def test_permanent_failures_and_flood_control_are_not_sent(sentry, kind):
    run(kind)
    sentry_sdk.capture_exception(RetriableError("a control, to show the transport works"))
    sentry_sdk.flush()
    assert [e["exception"]["values"][-1]["type"] for e in sentry.events] == ["RetriableError"]


def test_without_a_dsn_sentry_stays_off(monkeypatch):
    monkeypatch.delenv("SENTRY_DSN", raising=False)
    assert init_sentry() is False
    assert not sentry_sdk.get_client().is_active()


@pytest.mark.parametrize("dsn", ["", DSN])
def test_settings_start_sentry_only_with_a_dsn(dsn):
    code = (
        "import django, sentry_sdk; django.setup(); c = sentry_sdk.get_client(); "
        "print(c.is_active(), c.options['environment'], c.options['release'], c.should_send_default_pii(), "
        "c.options['traces_sample_rate'], [i for i in c.integrations if i == 'django'])"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "SENTRY_DSN": dsn,
        "SENTRY_ENVIRONMENT": "staging",
        "SENTRY_RELEASE": "abc123",
    }
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True, check=True)
    if dsn:
        assert out.stdout.split() == ["True", "staging", "abc123", "False", "0.0", "['django']"]
    else:
        assert out.stdout.split()[0] == "False"
