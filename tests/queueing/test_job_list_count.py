"""The job list never counts the whole history: past CappedCountPaginator.CAP it says "more
than", and the count it runs stops at the cap."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from queueing.models import JobRecord
from queueing.paginators import CappedCountPaginator

JOB_LIST = reverse("admin:queueing_jobrecord_changelist")


@pytest.fixture
def cap(monkeypatch) -> int:
    monkeypatch.setattr(CappedCountPaginator, "CAP", 5)
    return 5


def add_jobs(count: int, **fields) -> list[JobRecord]:
    return JobRecord.objects.bulk_create(
        JobRecord(queue="telegram", kind="tests.jobs.echo", **fields) for _ in range(count)
    )


@pytest.mark.django_db
def test_past_the_cap_the_list_says_more_than_and_counts_no_further(admin_client, cap):
    add_jobs(8)

    with CaptureQueriesContext(connection) as queries:
        page = admin_client.get(JOB_LIST).content.decode()

    assert '<span id="result-count">More than 5</span> job records' in page
    counts = [q["sql"] for q in queries if "COUNT(" in q["sql"] and "queueing_jobrecord" in q["sql"]]
    assert counts and all("LIMIT 6" in sql for sql in counts)


@pytest.mark.django_db
def test_under_the_cap_the_count_is_exact_and_the_newest_job_comes_first(admin_client, cap):
    add_jobs(2, status="succeeded")
    *_, newest = add_jobs(3, status="failed")

    page = admin_client.get(JOB_LIST + "?status__exact=failed").content.decode()

    assert '<span id="result-count">3</span> job records' in page
    assert page.index(f'href="/admin/queueing/jobrecord/{newest.pk}/change/') < page.index(
        f'href="/admin/queueing/jobrecord/{newest.pk - 1}/change/'
    )
