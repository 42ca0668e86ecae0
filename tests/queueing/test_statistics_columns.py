"""The statistics' histogram columns are declared one by one (so `wait_b3` can be found by
search), and must match TIMING_BUCKETS: a bucket added there needs its columns."""

import pytest

from queueing.models import TIMING_BUCKETS, JobHour, JobMinute, JobTotal, bucket_fields


@pytest.mark.parametrize(
    ("model", "prefixes"), [(JobMinute, ("wait", "run")), (JobHour, ("wait", "run")), (JobTotal, ("run",))]
)
def test_each_timing_bucket_has_exactly_one_column(model, prefixes):
    columns = {field.name for field in model._meta.fields if field.name[:5] in ("wait_", "run_b")}
    columns -= {"wait_sum"}
    assert columns == {name for prefix in prefixes for name in bucket_fields(prefix)}
    assert len(bucket_fields("run")) == len(TIMING_BUCKETS)
