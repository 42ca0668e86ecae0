"""The job history admin: who may see it, the list and its filters, the read-only detail page,
and the retry and cancel actions."""

from datetime import timedelta

import pytest
from django.contrib import admin
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from queueing.errors import PERMANENT, RETRIABLE
from queueing.jobs import retry_all
from queueing.models import LOST, JobQuerySet, JobRecord
from tests.waiting import wait_for

pytestmark = pytest.mark.django_db

Status = JobRecord.Status
CHANGELIST = "admin:queueing_jobrecord_changelist"
RETRY_FAILED = "admin:queueing_jobrecord_retry_failed"


def make_job(**fields) -> JobRecord:
    defaults = {"queue": "telegram", "kind": "tests.jobs.echo", "args": ["hello"], "max_attempts": 4}
    return JobRecord.objects.create(**{**defaults, **fields})


def failed_job(**fields) -> JobRecord:
    defaults = {
        "status": Status.FAILED,
        "attempts": 1,
        "error_class": PERMANENT,
        "last_error": "PermanentError: chat not found",
        "finished_at": timezone.now() - timedelta(minutes=1),
    }
    return make_job(**{**defaults, **fields})


def listed(client, **params) -> set[int]:
    response = client.get(reverse(CHANGELIST), params)
    assert response.status_code == 200
    return {job.pk for job in response.context["cl"].result_list}


def run_action(client, action: str, jobs: list[JobRecord]):
    data = {"action": action, ACTION_CHECKBOX_NAME: [job.pk for job in jobs], "index": "0"}
    return client.post(reverse(CHANGELIST), data, follow=True)


def messages_of(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


@pytest.fixture(autouse=True)
def static_files_without_a_manifest(settings):
    """The project's manifest storage wants `collectstatic`, which a test run does not do."""
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


def test_anonymous_and_non_staff_users_are_sent_to_the_login_page(client, django_user_model):
    url = reverse(CHANGELIST)
    assert client.get(url).url.startswith(reverse("admin:login"))

    client.force_login(django_user_model.objects.create_user("member"))
    response = client.get(url)

    assert response.status_code == 302
    assert response.url.startswith(reverse("admin:login"))


def test_staff_may_view_with_the_view_permission_but_retry_only_with_the_change_permission(client, django_user_model):
    job = failed_job()
    viewer = django_user_model.objects.create_user("viewer", is_staff=True)
    client.force_login(viewer)
    assert client.get(reverse(CHANGELIST)).status_code == 403

    viewer.user_permissions.add(Permission.objects.get(codename="view_jobrecord"))
    response = client.get(reverse(CHANGELIST))

    assert response.status_code == 200
    assert "retry_selected" not in response.content.decode()
    assert reverse(RETRY_FAILED) not in response.content.decode()
    assert client.get(reverse(RETRY_FAILED)).status_code == 403
    assert client.post(reverse(RETRY_FAILED), {"as_of": timezone.now().isoformat()}).status_code == 403
    assert not job.retried_by.exists()


def test_the_list_shows_each_job_in_one_row(admin_client):
    job = failed_job(label="Reply to @ann", attempts=2, started_at=timezone.now() - timedelta(seconds=3))
    job.finished_at = job.started_at + timedelta(seconds=1.5)
    job.save()

    html = admin_client.get(reverse(CHANGELIST), {"_facets": "True"}).content.decode()

    assert "Show counts" not in html and "(1)" not in html
    assert '<span title="tests.jobs.echo">echo</span>' in html
    assert "Reply to @ann" in html
    assert '<span class="job-status job-status-failed">Failed</span>' in html
    assert "2/4" in html
    assert "1.50 s" in html


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, {"recent", "older", "oldest"}),
        ({"queue": "downloads"}, {"oldest"}),
        ({"kind": "tests.jobs.crash"}, {"oldest"}),
        ({"status__exact": "retrying"}, {"recent"}),
        ({"error_class__exact": PERMANENT}, {"older"}),
        ({"error_class__exact": LOST}, set()),
        ({"enqueued": "1h"}, {"recent"}),
        ({"enqueued": "24h"}, {"recent", "older"}),
        ({"enqueued": "7d"}, {"recent", "older"}),
        ({"queue": "telegram", "status__exact": "failed"}, {"older"}),
    ],
)
def test_the_list_filters_by_queue_kind_status_error_class_and_time(admin_client, params, expected):
    now = timezone.now()
    jobs = {
        "recent": make_job(
            queue="broadcasts", status=Status.RETRYING, error_class=RETRIABLE, enqueued_at=now - timedelta(minutes=30)
        ),
        "older": failed_job(enqueued_at=now - timedelta(hours=5)),
        "oldest": make_job(
            queue="downloads", kind="tests.jobs.crash", status=Status.SUCCEEDED, enqueued_at=now - timedelta(days=10)
        ),
    }

    assert listed(admin_client, **params) == {jobs[name].pk for name in expected}


@pytest.mark.parametrize(
    ("term", "expected"),
    [
        ("needle-42", {"in_args"}),
        ("chat_id", {"in_kwargs"}),
        ("blocked by the user", {"in_error"}),
        ("weekly digest", {"in_label"}),
        ("tests.jobs.crash", {"in_kind"}),
        ("hello", {"in_error", "in_label", "in_kind"}),
        ("hello blocked", {"in_error"}),
        ('"by the user"', {"in_error"}),
        ("zoë", {"in_args", "in_kwargs"}),
        ("say '\"hi\"'", {"in_kwargs"}),
    ],
)
def test_search_looks_in_arguments_label_last_error_and_kind(admin_client, term, expected):
    jobs = {
        "in_args": make_job(args=["needle-42", 7, "Zoë"]),
        "in_kwargs": make_job(args=[], kwargs={"chat_id": 99, "greeting": 'Zoë, say "hi"'}),
        "in_error": failed_job(last_error="Forbidden: bot was blocked by the user"),
        "in_label": make_job(label="Weekly digest"),
        "in_kind": make_job(kind="tests.jobs.crash"),
    }

    assert listed(admin_client, q=term) == {jobs[name].pk for name in expected}


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the trigram index is PostgreSQL's")
def test_a_search_on_postgresql_is_answered_by_the_trigram_index():
    searched, _ = admin.site.get_model_admin(JobRecord).get_search_results(None, JobRecord.objects.all(), "chat 42")
    with connection.cursor() as cursor:
        # A test's few rows would be read whole (a scan of the table, or of the index that
        # sorts them): leave the planner only index lookups by condition.
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_indexscan = off")

    assert "queueing_jobrecord_search" in searched.order_by().explain()


def test_the_list_takes_the_same_number_of_queries_however_many_jobs_it_shows(admin_client):
    def queries_for_list() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert admin_client.get(reverse(CHANGELIST)).status_code == 200
        return len(queries)

    original = failed_job()
    make_job(retry_of=original)
    few = queries_for_list()
    for n in range(30):
        make_job(retry_of=failed_job(args=[n]))

    assert queries_for_list() == few


def test_the_detail_page_shows_every_field_the_traceback_and_the_lineage(admin_client):
    original = failed_job()
    job = failed_job(
        retry_of=original,
        label="Send the <b>digest</b>",
        kwargs={"chat_id": 99},
        last_error="KeyError: 'chat'",
        traceback="Traceback (most recent call last):\n  File \"x.py\", line 1\nKeyError: 'chat' <script>",
        worker="host:1234",
        task_id="abc123",
    )
    first_retry, second_retry = failed_job(retry_of=job), make_job(retry_of=job)

    response = admin_client.get(reverse("admin:queueing_jobrecord_change", args=[job.pk]))

    html = response.content.decode()
    assert response.status_code == 200
    assert (
        '<pre class="job-traceback">Traceback (most recent call last):\n  File &quot;x.py&quot;, line 1\n'
        "KeyError: &#x27;chat&#x27; &lt;script&gt;</pre>"
    ) in html
    assert "Send the &lt;b&gt;digest&lt;/b&gt;" in html
    for text in ("{&quot;chat_id&quot;: 99}", "host:1234", "abc123", str(job.dispatch_id)):
        assert text in html
    assert f'href="{reverse("admin:queueing_jobrecord_change", args=[original.pk])}"' in html
    for retry in (first_retry, second_retry):
        assert f'<a href="{reverse("admin:queueing_jobrecord_change", args=[retry.pk])}">{retry}</a>' in html


def test_the_detail_page_is_read_only(admin_client):
    job = failed_job(label="as it was")
    url = reverse("admin:queueing_jobrecord_change", args=[job.pk])

    html = admin_client.get(url).content.decode()
    response = admin_client.post(url, {"label": "changed", "status": Status.QUEUED})

    assert 'name="label"' not in html
    assert 'name="_save"' not in html
    assert response.status_code == 403
    job.refresh_from_db()
    assert (job.label, job.status) == ("as it was", Status.FAILED)


def test_jobs_cannot_be_added_by_hand(admin_client):
    assert admin_client.get(reverse("admin:queueing_jobrecord_add")).status_code == 403


def test_only_finished_jobs_can_be_deleted(admin_client):
    done, waiting = make_job(status=Status.SUCCEEDED), make_job(status=Status.QUEUED)

    delete_waiting = reverse("admin:queueing_jobrecord_delete", args=[waiting.pk])
    assert admin_client.post(delete_waiting, {"post": "yes"}).status_code == 403
    assert admin_client.get(reverse("admin:queueing_jobrecord_delete", args=[waiting.pk])).status_code == 403
    admin_client.post(reverse("admin:queueing_jobrecord_delete", args=[done.pk]), {"post": "yes"})

    assert list(JobRecord.objects.all()) == [waiting]


def test_deleting_a_selection_with_an_unfinished_job_is_refused(admin_client):
    done, running = make_job(status=Status.FAILED), make_job(status=Status.RUNNING)
    data = {"action": "delete_selected", ACTION_CHECKBOX_NAME: [done.pk, running.pk], "index": "0"}

    confirmation = admin_client.post(reverse(CHANGELIST), data)
    confirmed = admin_client.post(reverse(CHANGELIST), {**data, "post": "yes"})

    assert "your account doesn't have permission to delete" in confirmation.content.decode()
    assert confirmed.status_code == 403
    assert JobRecord.objects.count() == 2


def test_retry_selected_makes_linked_new_jobs_of_failed_and_cancelled_jobs_only(
    admin_client, broker, django_capture_on_commit_callbacks
):
    failed = failed_job(args=["again"], kwargs={"x": 1}, label="Echo again")
    cancelled = make_job(status=Status.CANCELLED, queue="broadcasts", finished_at=timezone.now())
    retried_before = failed_job()
    make_job(retry_of=retried_before)
    untouched = [make_job(status=status) for status in (Status.QUEUED, Status.RUNNING, Status.SUCCEEDED)]

    with django_capture_on_commit_callbacks(execute=True):
        response = run_action(admin_client, "retry_selected", [failed, cancelled, retried_before, *untouched])

    assert messages_of(response) == [
        "Retried 2 of 6 selected jobs.",
        "4 were left alone: only failed or cancelled jobs that nobody has retried yet, "
        "and whose kind is still a job, can be retried.",
    ]
    assert (broker("telegram").queue_size(), broker("broadcasts").queue_size()) == (1, 1)
    again = failed.retried_by.get()
    assert (again.kind, again.queue, again.args, again.kwargs, again.label) == (
        "tests.jobs.echo",
        "telegram",
        ["again"],
        {"x": 1},
        "Echo again",
    )
    assert (again.status, again.attempts, again.max_attempts) == (Status.QUEUED, 0, 4)
    assert cancelled.retried_by.get().queue == "broadcasts"
    assert retried_before.retried_by.count() == 1
    assert all(not job.retried_by.exists() for job in untouched)


def test_a_job_retried_by_someone_else_meanwhile_is_not_retried_again(monkeypatch):
    job = failed_job()
    make_job(retry_of=job)
    # As if another operator's retry landed after this one's list of jobs was read.
    monkeypatch.setattr(JobQuerySet, "not_retried", lambda jobs: jobs)

    assert retry_all(JobRecord.objects.filter(pk=job.pk)) == 0
    assert job.retried_by.count() == 1


def test_retry_selected_skips_a_job_whose_kind_is_no_longer_a_job(admin_client):
    gone = failed_job(kind="tests.jobs.removed_long_ago")

    response = run_action(admin_client, "retry_selected", [gone])

    assert messages_of(response)[0] == "Retried 0 of 1 selected jobs."
    assert not gone.retried_by.exists()


@pytest.mark.e2e
def test_a_job_retried_from_the_admin_runs_on_its_queue(clusters, admin_client):
    original = failed_job(args=["once more"])
    run_action(admin_client, "retry_selected", [original])
    again = original.retried_by.get()

    clusters.start("telegram")

    wait_for(
        lambda: JobRecord.objects.filter(pk=again.pk, status=Status.SUCCEEDED).exists(), what="the retried job to run"
    )
    again.refresh_from_db()
    assert again.result == "once more"
    assert again.retry_of_id == original.pk


def test_cancel_cancels_queued_and_retrying_jobs_only(admin_client):
    waiting = [make_job(status=Status.QUEUED), make_job(status=Status.RETRYING, next_retry_at=timezone.now())]
    others = [make_job(status=status) for status in (Status.RUNNING, Status.SUCCEEDED, Status.FAILED)]

    response = run_action(admin_client, "cancel_selected", [*waiting, *others])

    assert messages_of(response) == [
        "Cancelled 2 of 5 selected jobs.",
        "3 were left alone: only queued or retrying jobs can be cancelled.",
    ]
    for job in waiting:
        job.refresh_from_db()
        assert job.status == Status.CANCELLED and job.finished_at and job.next_retry_at is None
    assert [job.status for job in JobRecord.objects.filter(pk__in=[j.pk for j in others]).order_by("pk")] == [
        Status.RUNNING,
        Status.SUCCEEDED,
        Status.FAILED,
    ]


def test_the_list_links_to_retrying_the_failed_jobs_it_shows(admin_client):
    html = admin_client.get(reverse(CHANGELIST), {"queue": "telegram", "q": "x"}).content.decode()

    assert f'href="{reverse(RETRY_FAILED)}?queue=telegram&amp;q=x"' in html


def test_retrying_every_failed_job_of_a_filter_confirms_the_count_then_retries_exactly_those(
    admin_client, broker, django_capture_on_commit_callbacks
):
    matching = [failed_job(kind="tests.jobs.crash"), failed_job(kind="tests.jobs.crash", error_class=RETRIABLE)]
    retried_before = failed_job(kind="tests.jobs.crash")
    make_job(kind="tests.jobs.crash", retry_of=retried_before)
    not_failed = make_job(kind="tests.jobs.crash", status=Status.CANCELLED)
    other_queue = failed_job(kind="tests.jobs.crash", queue="downloads")
    other_kind = failed_job(kind="tests.jobs.echo")
    url = f"{reverse(RETRY_FAILED)}?queue=telegram&kind=tests.jobs.crash"

    page = admin_client.get(url)

    html = page.content.decode()
    assert page.status_code == 200
    assert '<strong id="retry-count">2</strong> failed jobs' in html
    assert "<li>Queue: telegram</li>" in html and "<li>Kind: tests.jobs.crash</li>" in html
    assert "<li>telegram: tests.jobs.crash — 2</li>" in html
    assert JobRecord.objects.count() == 7

    failing_after_confirmation = failed_job(kind="tests.jobs.crash", finished_at=timezone.now() + timedelta(seconds=1))
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(url, {"as_of": page.context["as_of"], "post": "yes"}, follow=True)

    assert response.redirect_chain == [(f"{reverse(CHANGELIST)}?queue=telegram&kind=tests.jobs.crash", 302)]
    assert messages_of(response) == ["Retried 2 failed jobs."]
    assert broker("telegram").queue_size() == 2
    assert all(job.retried_by.count() == 1 for job in matching)
    assert retried_before.retried_by.count() == 1
    for job in (not_failed, other_queue, other_kind, failing_after_confirmation):
        assert not job.retried_by.exists()


def test_retrying_every_failed_job_of_a_search_counts_only_the_matches(admin_client):
    failed_job(args=["needle"]), failed_job(last_error="needle in the error"), failed_job(args=["hay"])

    html = admin_client.get(reverse(RETRY_FAILED), {"q": "needle"}).content.decode()

    assert '<strong id="retry-count">2</strong>' in html
    assert "Search: “needle”" in html


def test_retrying_every_failed_job_with_no_match_offers_nothing_to_confirm(admin_client):
    make_job(status=Status.SUCCEEDED)

    html = admin_client.get(reverse(RETRY_FAILED)).content.decode()

    assert 'id="retry-count-none"' in html
    assert 'name="as_of"' not in html


def test_retrying_every_failed_job_without_the_confirmation_retries_nothing(admin_client):
    job = failed_job()

    response = admin_client.post(reverse(RETRY_FAILED), {"post": "yes"}, follow=True)

    assert messages_of(response) == ["The confirmation was incomplete; nothing was retried."]
    assert not job.retried_by.exists()


CHANGE = "admin:queueing_jobrecord_change"


def operator(django_user_model, *codenames: str):
    user = django_user_model.objects.create_user("operator", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames, content_type__app_label="queueing"))
    return user


def test_django_q_pages_are_hidden_so_the_job_history_is_the_one_failure_list(admin_client):
    index = admin_client.get(reverse("admin:index")).content.decode()

    assert reverse(CHANGELIST) in index
    assert "Failed tasks" not in index and "/admin/django_q/" not in index
    for page in ("failure", "success", "ormq", "schedule"):
        assert admin_client.get(f"/admin/django_q/{page}/").status_code == 404


@pytest.mark.parametrize(
    ("status", "retry_shown", "cancel_shown"),
    [
        (Status.FAILED, True, False),
        (Status.CANCELLED, True, False),
        (Status.QUEUED, False, True),
        (Status.RETRYING, False, True),
        (Status.SUCCEEDED, False, False),
        (Status.RUNNING, False, False),
    ],
)
def test_a_jobs_page_offers_retry_or_cancel_by_its_status(admin_client, status, retry_shown, cancel_shown):
    job = make_job(status=status)

    html = admin_client.get(reverse(CHANGE, args=[job.pk])).content.decode()

    assert ('id="retry-job"' in html) is retry_shown
    assert ('id="cancel-job"' in html) is cancel_shown
    assert "csrfmiddlewaretoken" in html


def test_retry_on_a_jobs_page_makes_one_linked_job_and_says_so(admin_client):
    job = failed_job()
    url = reverse("admin:queueing_jobrecord_retry", args=[job.pk])

    response = admin_client.post(url, follow=True)
    again = admin_client.post(url, follow=True)

    retry = job.retried_by.get()
    assert retry.status == Status.QUEUED
    assert response.redirect_chain[-1][0] == reverse(CHANGE, args=[job.pk])
    assert f'Retried as <a href="{reverse(CHANGE, args=[retry.pk])}">job {retry.pk}</a>.' in messages_of(response)
    assert 'id="retry-job"' not in response.content.decode()
    assert "was not retried" in messages_of(again)[0]
    assert job.retried_by.count() == 1


def test_cancel_on_a_jobs_page_cancels_a_waiting_job_only(admin_client):
    waiting, running = make_job(status=Status.RETRYING), make_job(status=Status.RUNNING)

    cancelled = admin_client.post(reverse("admin:queueing_jobrecord_cancel", args=[waiting.pk]), follow=True)
    refused = admin_client.post(reverse("admin:queueing_jobrecord_cancel", args=[running.pk]), follow=True)

    waiting.refresh_from_db(), running.refresh_from_db()
    assert (waiting.status, running.status) == (Status.CANCELLED, Status.RUNNING)
    assert messages_of(cancelled) == ["The job was cancelled; it will not run."]
    assert messages_of(refused) == ["This job was not cancelled: it is no longer waiting."]


def test_retry_and_cancel_need_a_post_and_the_change_permission(client, django_user_model):
    failed, queued = failed_job(), make_job(status=Status.QUEUED)
    retry_url = reverse("admin:queueing_jobrecord_retry", args=[failed.pk])
    cancel_url = reverse("admin:queueing_jobrecord_cancel", args=[queued.pk])
    user = operator(django_user_model, "view_jobrecord")
    client.force_login(user)
    assert client.post(retry_url).status_code == 403
    assert client.post(cancel_url).status_code == 403
    assert 'id="retry-job"' not in client.get(reverse(CHANGE, args=[failed.pk])).content.decode()
    user.user_permissions.add(Permission.objects.get(codename="change_jobrecord"))
    assert client.get(retry_url).status_code == 405
    assert client.get(cancel_url).status_code == 405
    assert not failed.retried_by.exists()
    queued.refresh_from_db()
    assert queued.status == Status.QUEUED


def test_a_jobs_arguments_link_to_what_they_are_with_the_raw_arguments_beside(admin_client):
    from bots.models import Bot, Update
    from tests.fake_telegram import make_token

    bot = Bot.objects.create(token=make_token(7400001), webhook_secret=Bot.new_secret())
    update = Update.objects.create(bot=bot, update_id=36, payload={"update_id": 36, "message": {}}, chat_id=5)
    handled = make_job(kind="bots.tasks.handle_update", args=[update.pk])
    gone = make_job(kind="bots.tasks.handle_update", args=[update.pk + 1000])
    unknown = make_job(kind="tests.jobs.echo", args=["hello"])

    handled_html = admin_client.get(reverse(CHANGE, args=[handled.pk])).content.decode()
    gone_html = admin_client.get(reverse(CHANGE, args=[gone.pk])).content.decode()
    unknown_html = admin_client.get(reverse(CHANGE, args=[unknown.pk])).content.decode()

    update_url = reverse("admin:bots_update_change", args=[update.pk])
    assert f'<a href="{update_url}">Update: {update}</a>' in handled_html
    assert f"<code>[{update.pk}]</code>" in handled_html
    assert f"update {update.pk + 1000} (deleted)" in gone_html
    assert "<code>[&quot;hello&quot;]</code>" in unknown_html


def test_a_jobs_error_reads_as_a_sentence_with_the_technical_detail_one_click_away(admin_client):
    job = failed_job(attempts=4, error_class=PERMANENT, last_error="Forbidden: Forbidden: bot was blocked by the user")

    html = admin_client.get(reverse(CHANGE, args=[job.pk])).content.decode()
    listing = admin_client.get(reverse(CHANGELIST)).content.decode()

    assert '<p class="job-error">The member blocked the bot. Failed after 4 attempts.</p>' in html
    assert "<details><summary>Technical detail (permanent)</summary>" in html
    assert "Forbidden: Forbidden: bot was blocked by the user</pre></details>" in html
    assert "The member blocked the bot. Failed after 4 attempts." in listing


def test_a_final_failure_is_never_called_retriable(admin_client):
    job = failed_job(attempts=3, error_class=RETRIABLE, last_error="NetworkError: connection reset")

    listing = admin_client.get(reverse(CHANGELIST)).content.decode()
    html = admin_client.get(reverse(CHANGE, args=[job.pk])).content.decode()

    assert "Telegram was unreachable. Failed after 3 attempts." in listing
    assert "will be tried again" not in html
