"""The job history in the admin: read-only records an operator filters, searches, retries
and cancels. Jobs are never edited by hand; the change permission is what lets a user
retry and cancel them."""

import json
from datetime import timedelta

import django_q.admin  # noqa: F401  registers django-q2's pages, so they can be taken away below
from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.db import connections
from django.db.models import Count, Q, QuerySet, TextField
from django.db.models.expressions import RawSQL
from django.db.models.functions import Cast, Left
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.html import format_html, format_html_join
from django.utils.text import smart_split, unescape_string_literal
from django.views.decorators.http import require_POST
from django_q.models import Failure, OrmQ, Schedule, Success

from queueing.jobs import describe_args, job_kinds, retry_all
from queueing.models import Alert, JobQuerySet, JobRecord
from queueing.paginators import CappedCountPaginator
from queueing.queues import queue_names
from queueing.wording import error_sentence

# django-q2's task pages are a second, disagreeing failure list (its "Resubmit" bypasses our
# job records): the job history below is the one list operators act on.
for model in (Schedule, Success, Failure, OrmQ):
    if admin.site.is_registered(model):
        admin.site.unregister(model)

ERROR_HEAD = 300  # enough of last_error for error_sentence() to tell what Telegram said
# What a search looks in on PostgreSQL: the expression migration 0009 indexes (the same one,
# or the planner cannot use the index), with the columns named by table for the joins of
# retry_failed_view. One trigram index answers every word, where a condition per column made
# the planner expect a handful of matches and scan the whole history for them.
SEARCH_TEXT = "UPPER({})".format(
    " || ' ' || ".join(
        f'"{JobRecord._meta.db_table}".{column}'
        for column in ("label", "kind", "last_error", "args::text", "kwargs::text")
    )
)


class DeclaredValuesFilter(admin.SimpleListFilter):
    """Choices from the code (settings, declared jobs), not a DISTINCT over the whole history
    on every page."""

    @staticmethod
    def declared() -> list[str]:
        raise NotImplementedError

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [(value, value) for value in self.declared()]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return queryset.filter(**{self.parameter_name: self.value()}) if self.value() else queryset


class QueueFilter(DeclaredValuesFilter):
    title = "queue"
    parameter_name = "queue"
    declared = staticmethod(queue_names)


class KindFilter(DeclaredValuesFilter):
    title = "kind"
    parameter_name = "kind"
    declared = staticmethod(job_kinds)


class EnqueuedWithinFilter(admin.SimpleListFilter):
    title = "enqueued"
    parameter_name = "enqueued"
    PERIODS = {
        "1h": ("In the last hour", timedelta(hours=1)),
        "24h": ("In the last 24 hours", timedelta(hours=24)),
        "7d": ("In the last 7 days", timedelta(days=7)),
    }

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [(key, label) for key, (label, _) in self.PERIODS.items()]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() not in self.PERIODS:
            return queryset
        _, period = self.PERIODS[self.value()]
        return queryset.filter(enqueued_at__gte=timezone.now() - period)


class JobChangeList(ChangeList):
    def get_queryset(self, request: HttpRequest, exclude_parameters=None) -> QuerySet:
        # A traceback runs to 20 kB and the list shows none: a page of 100 rows would fetch 2 MB.
        queryset = super().get_queryset(request, exclude_parameters).defer("traceback", "last_error", "result")
        return queryset.annotate(error_head=Left("last_error", ERROR_HEAD))


@admin.register(JobRecord)
class JobRecordAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "kind_display",
        "label",
        "queue",
        "status_display",
        "attempts_display",
        "error_summary",
        "enqueued_at",
        "runtime_display",
    ]
    list_filter = [QueueFilter, KindFilter, "status", "error_class", EnqueuedWithinFilter]
    search_fields = ["label", "kind", "last_error", "args", "kwargs"]  # as get_search_results does it
    search_help_text = "Searches the label, kind, last error and arguments."
    show_full_result_count = False
    # Counts per filter choice are a COUNT each over the whole history.
    show_facets = admin.ShowFacets.NEVER
    list_per_page = 100
    paginator = CappedCountPaginator
    # Newest first by id, the order jobs are enqueued in: a filtered page walks the primary key
    # back to its 100 rows instead of sorting every match by enqueued_at (0.5 s of a million).
    ordering = ["-id"]
    actions = ["retry_selected", "cancel_selected"]
    fieldsets = [
        (None, {"fields": ["kind", "label", "queue", "status_display", "attempts", "max_attempts"]}),
        ("Arguments", {"fields": ["args_display", "kwargs"]}),
        ("Outcome", {"fields": ["result", "error_display", "traceback_display"]}),
        (
            "Timings",
            {
                "fields": [
                    "enqueued_at",
                    "dispatched_at",
                    "started_at",
                    "finished_at",
                    "next_retry_at",
                    "runtime_display",
                ]
            },
        ),
        ("Lineage", {"fields": ["retry_of", "retried_by_display"]}),
        ("Worker", {"fields": ["worker", "task_id", "dispatch_id"]}),
    ]
    readonly_fields = [
        "status_display",
        "args_display",
        "error_display",
        "traceback_display",
        "runtime_display",
        "retried_by_display",
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: JobRecord | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: JobRecord | None = None) -> bool:
        if obj is not None and not obj.is_finished:
            return False
        return super().has_delete_permission(request, obj)

    def has_operate_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(f"{self.opts.app_label}.change_{self.opts.model_name}")

    def get_changelist(self, request: HttpRequest, **kwargs) -> type[ChangeList]:
        return JobChangeList

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str) -> tuple[QuerySet, bool]:
        """Every word must appear in the label, kind, last error or arguments. The arguments are
        searched as JSON text, which SQLite keeps as json.dumps wrote it, with non-ASCII
        characters and quotes escaped: each word is looked for in that form too. PostgreSQL
        looks in all five at once, through the trigram index on SEARCH_TEXT (migration 0009)."""
        postgres = connections[queryset.db].vendor == "postgresql"
        if postgres:
            queryset = queryset.alias(search_text=RawSQL(SEARCH_TEXT, (), output_field=TextField()))
        else:
            queryset = queryset.alias(args_text=Cast("args", TextField()), kwargs_text=Cast("kwargs", TextField()))
        for word in search_words(search_term):
            if postgres:
                forms = {word, json.dumps(word, ensure_ascii=False)[1:-1]}
                found = [("search_text__contains", form.upper()) for form in forms]
            else:
                in_json = [
                    (f"{field}__icontains", form)
                    for field in ("args_text", "kwargs_text")
                    for form in {word, json.dumps(word)[1:-1]}
                ]
                found = [(f"{field}__icontains", word) for field in ("label", "kind", "last_error")] + in_json
            queryset = queryset.filter(Q.create(found, connector=Q.OR))
        return queryset, False

    def _url(self, view: str, *args) -> str:
        return reverse(f"{self.admin_site.name}:{self.opts.app_label}_{self.opts.model_name}_{view}", args=args)

    def get_urls(self) -> list:
        name = f"{self.opts.app_label}_{self.opts.model_name}_retry_failed"
        retry_failed = path("retry-failed/", self.admin_site.admin_view(self.retry_failed_view), name=name)
        prefix = f"{self.opts.app_label}_{self.opts.model_name}"
        one_job = [
            path(f"<int:pk>/{verb}/", self.admin_site.admin_view(require_POST(view)), name=f"{prefix}_{verb}")
            for verb, view in (("retry", self.retry_view), ("cancel", self.cancel_view))
        ]
        return [retry_failed, *one_job, *super().get_urls()]

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None):
        job = self.get_object(request, object_id)
        operate = job is not None and self.has_operate_permission(request)
        extra_context = {
            **(extra_context or {}),
            "can_retry_job": operate and _retriable(job),
            "can_cancel_job": operate and job.status in (JobRecord.Status.QUEUED, JobRecord.Status.RETRYING),
        }
        return super().change_view(request, object_id, form_url, extra_context)

    def retry_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        if not self.has_operate_permission(request):
            raise PermissionDenied
        job = self.get_object(request, str(pk))
        if job is None or not _retriable(job) or not retry_all(JobRecord.objects.filter(pk=pk)):
            self.message_user(
                request,
                "This job was not retried: only a failed or cancelled job that nobody has retried yet, "
                "and whose kind is still a job, can be retried.",
                messages.WARNING,
            )
        else:
            retry = job.retried_by.order_by("pk").last()
            self.message_user(
                request,
                format_html('Retried as <a href="{}">job {}</a>.', self._url("change", retry.pk), retry.pk),
                messages.SUCCESS,
            )
        return HttpResponseRedirect(self._url("change", pk))

    def cancel_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        if not self.has_operate_permission(request):
            raise PermissionDenied
        if JobRecord.objects.filter(pk=pk).cancel():
            self.message_user(request, "The job was cancelled; it will not run.", messages.SUCCESS)
        else:
            self.message_user(request, "This job was not cancelled: it is no longer waiting.", messages.WARNING)
        return HttpResponseRedirect(self._url("change", pk))

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        extra_context = {**(extra_context or {}), "can_retry": self.has_operate_permission(request)}
        return super().changelist_view(request, extra_context)

    @admin.display(description="kind", ordering="kind")
    def kind_display(self, job: JobRecord) -> str:
        return format_html('<span title="{}">{}</span>', job.kind, job.short_kind)

    @admin.display(description="status", ordering="status")
    def status_display(self, job: JobRecord) -> str:
        return format_html('<span class="job-status job-status-{}">{}</span>', job.status, job.get_status_display())

    @admin.display(description="attempts")
    def attempts_display(self, job: JobRecord) -> str:
        return f"{job.attempts}/{job.max_attempts}"

    @admin.display(description="error")
    def error_summary(self, job: JobRecord) -> str:
        sentence = error_sentence(job.error_class, job.error_head, job.status, job.attempts)
        return format_html('<span title="{}">{}</span>', job.error_head, sentence) if sentence else ""

    @admin.display(description="error")
    def error_display(self, job: JobRecord) -> str:
        sentence = error_sentence(job.error_class, job.last_error, job.status, job.attempts)
        if not sentence:
            return self.get_empty_value_display()
        return format_html(
            '<p class="job-error">{}</p><details><summary>Technical detail ({})</summary><pre class="job-traceback">'
            "{}</pre></details>",
            sentence,
            job.get_error_class_display() or "no class",
            job.last_error,
        )

    @admin.display(description="arguments")
    def args_display(self, job: JobRecord) -> str:
        links = describe_args(job)
        raw = format_html("<code>{}</code>", json.dumps(job.args, ensure_ascii=False))
        if not links:
            return raw
        described = format_html_join(
            ", ", "{}", ((format_html('<a href="{}">{}</a>', url, label) if url else label,) for label, url in links)
        )
        return format_html("{} <small>{}</small>", described, raw)

    @admin.display(description="runtime")
    def runtime_display(self, job: JobRecord) -> str:
        return f"{job.runtime.total_seconds():.2f} s" if job.runtime is not None else self.get_empty_value_display()

    @admin.display(description="traceback")
    def traceback_display(self, job: JobRecord) -> str:
        return (
            format_html('<pre class="job-traceback">{}</pre>', job.traceback)
            if job.traceback
            else self.get_empty_value_display()
        )

    @admin.display(description="retried by")
    def retried_by_display(self, job: JobRecord) -> str:
        retries = job.retried_by.order_by("pk")
        if not retries:
            return self.get_empty_value_display()
        return format_html_join(
            ", ",
            '<a href="{}">{}</a>',
            ((self._url("change", retry.pk), retry) for retry in retries),
        )

    @admin.action(description="Retry selected failed or cancelled jobs", permissions=["operate"])
    def retry_selected(self, request: HttpRequest, queryset: JobQuerySet) -> None:
        selected = queryset.count()
        retried = retry_all(queryset.filter(status__in=[JobRecord.Status.FAILED, JobRecord.Status.CANCELLED]))
        self.message_user(request, f"Retried {retried} of {selected} selected jobs.", messages.SUCCESS)
        if retried < selected:
            self.message_user(
                request,
                f"{selected - retried} were left alone: only failed or cancelled jobs that nobody has retried "
                "yet, and whose kind is still a job, can be retried.",
                messages.WARNING,
            )

    @admin.action(description="Cancel selected waiting jobs", permissions=["operate"])
    def cancel_selected(self, request: HttpRequest, queryset: JobQuerySet) -> None:
        selected = queryset.count()
        cancelled = queryset.cancel()
        self.message_user(request, f"Cancelled {cancelled} of {selected} selected jobs.", messages.SUCCESS)
        if cancelled < selected:
            self.message_user(
                request, f"{selected - cancelled} were left alone: only queued or retrying jobs can be cancelled."
            )

    def retry_failed_view(self, request: HttpRequest) -> HttpResponse:
        """Retry every failed job the changelist shows with the same query string, after a
        confirmation page. Only jobs that had failed when that page was shown are retried."""
        if not self.has_operate_permission(request):
            raise PermissionDenied
        changelist_url = self._url("changelist") + _query_string(request)
        try:
            changelist = self.get_changelist_instance(request)
        except IncorrectLookupParameters:
            return HttpResponseRedirect(changelist_url)
        failed = changelist.queryset.failed().not_retried()
        if request.method == "POST":
            as_of = parse_datetime(request.POST.get("as_of", ""))
            if as_of is None:
                self.message_user(request, "The confirmation was incomplete; nothing was retried.", messages.ERROR)
                return HttpResponseRedirect(changelist_url)
            retried = retry_all(failed.filter(finished_at__lte=as_of))
            self.message_user(request, f"Retried {retried} failed jobs.", messages.SUCCESS)
            return HttpResponseRedirect(changelist_url)
        context = {
            **self.admin_site.each_context(request),
            "title": "Retry failed jobs",
            "opts": self.opts,
            "count": failed.count(),
            "by_kind": failed.order_by().values("queue", "kind").annotate(jobs=Count("pk")).order_by("-jobs")[:20],
            "filters": _active_filters(changelist),
            "search": changelist.query,
            "as_of": timezone.now().isoformat(),
            "changelist_url": changelist_url,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/queueing/jobrecord/retry_failed_confirmation.html", context)


def _retriable(job: JobRecord) -> bool:
    return job.status in (JobRecord.Status.FAILED, JobRecord.Status.CANCELLED) and not job.retried_by.exists()


def _query_string(request: HttpRequest) -> str:
    return f"?{request.GET.urlencode()}" if request.GET else ""


def _active_filters(changelist: ChangeList) -> list[tuple[str, str]]:
    """(filter title, chosen value) for each list filter in use."""
    return [(spec.title, _chosen(spec, changelist)) for spec in changelist.filter_specs if spec.used_parameters]


def _chosen(spec: admin.ListFilter, changelist: ChangeList) -> str:
    chosen = [str(choice["display"]) for choice in spec.choices(changelist) if choice["selected"]]
    return ", ".join(chosen) or ", ".join(str(value) for value in spec.used_parameters.values())


def search_words(search_term: str) -> list[str]:
    """The words of a search as the admin splits them: "quoted phrases" stay whole."""
    return [
        unescape_string_literal(bit) if bit[0] in "\"'" and bit[0] == bit[-1] else bit
        for bit in smart_split(search_term)
    ]


@admin.register(Alert)
class AlertAdmin(admin.ModelAdmin):
    """What the operators were told: each crossed threshold from raised to resolved.
    Written only by queueing.alerts."""

    list_display = ["key", "level", "detail", "raised_at", "notifications", "last_notified_at", "resolved_at"]
    list_filter = ["level", ("resolved_at", admin.EmptyFieldListFilter)]
    search_fields = ["key", "detail"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Alert | None = None) -> bool:
        return False
