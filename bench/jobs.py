"""Jobs that exist only for the benchmarks. Workers can run them when
QUEUEING_JOB_MODULES includes `bench.jobs`."""

from queueing.jobs import job


@job(queue="telegram")
def noop() -> None:
    """Does nothing, so what is measured is the queueing around it."""
