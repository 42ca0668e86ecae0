"""Jobs that exist only for the tests: they succeed, fail or hang on demand."""

import time
from pathlib import Path

from queueing.errors import PermanentError, RateLimited, RetriableError
from queueing.jobs import job


@job(queue="telegram")
def echo(value):
    return value


@job(queue="telegram")
def sleep_for(seconds: float) -> str:
    time.sleep(seconds)
    return f"slept {seconds}"


@job(queue="telegram")
def fail_until(counter_file: str, succeed_on: int) -> int:
    """Raise a retriable error until run number `succeed_on`; the counter lives in a file
    so it survives across worker processes."""
    path = Path(counter_file)
    runs = int(path.read_text() or 0) + 1 if path.exists() else 1
    path.write_text(str(runs))
    if runs < succeed_on:
        raise RetriableError(f"run {runs} fails on purpose")
    return runs


@job(queue="telegram")
def fail_permanently(reason: str):
    raise PermanentError(reason, user_message="That cannot be done.")


@job(queue="telegram")
def rate_limited_once(counter_file: str, retry_after: float) -> int:
    path = Path(counter_file)
    runs = int(path.read_text() or 0) + 1 if path.exists() else 1
    path.write_text(str(runs))
    if runs == 1:
        raise RateLimited(retry_after)
    return runs


@job(queue="telegram")
def crash(message: str):
    raise KeyError(message)
