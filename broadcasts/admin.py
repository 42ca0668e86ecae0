from datetime import date
from decimal import Decimal
from pathlib import Path

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.core.validators import URLValidator
from django.db import transaction
from django.db.models import BigIntegerField, Count, F, OuterRef, Q, QuerySet, Subquery, Sum, Value
from django.db.models.functions import Coalesce, Greatest
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect, JsonResponse
from django.template.defaultfilters import pluralize
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import format_html, format_html_join
from django.views.decorators.http import require_POST, require_safe

from bots.models import Bot, OperatorLink, TelegramUser
from bots.telegram_api import call
from broadcasts import clicks, controls, results, variants
from broadcasts.audiences import audience_mistake, recipients, refusal
from broadcasts.exports import deliveries_csv, pledges_csv
from broadcasts.importing import (
    ACTIONS,
    OPTIONAL_COLUMNS,
    REQUIRED_COLUMNS,
    ImportResult,
    discard_stale_uploads,
    discard_upload,
    import_pledges,
    keep_upload,
    kept_upload,
)
from broadcasts.models import Audience, Broadcast, Delivery, DeliveryCount, MessageTemplate, MessageVersion, Pledge
from broadcasts.operator_links import OperatorLinkAdmin  # noqa: F401  (registers it)
from broadcasts.personalize import PLACEHOLDERS, unknown_hashtags
from broadcasts.preview import Preview
from broadcasts.summary import ab_test_in_words, send_summary
from broadcasts.tasks import send_test
from broadcasts.window import BadZone
from queueing.admin import search_words

# ---------------------------------------------------------------------------------------------
# Pledges and their CSV import
# ---------------------------------------------------------------------------------------------


class OverdueFilter(admin.SimpleListFilter):
    title = "overdue"
    parameter_name = "overdue"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("yes", "Overdue"), ("no", "Not overdue")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        overdue = Q(due_date__lt=date.today(), amount__gt=F("paid_amount"))
        if self.value() == "yes":
            return queryset.filter(overdue)
        if self.value() == "no":
            return queryset.exclude(overdue)
        return queryset


class PledgeUploadForm(forms.Form):
    MAX_SIZE = 50 * 1024 * 1024

    bot = forms.ModelChoiceField(queryset=Bot.objects.filter(is_active=True))
    file = forms.FileField(label="CSV file")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        bots = list(self.fields["bot"].queryset[:2])
        if len(bots) == 1:
            self.fields["bot"].initial = bots[0]

    def clean_file(self):
        upload = self.cleaned_data["file"]
        if upload.size > self.MAX_SIZE:
            raise forms.ValidationError("The file is larger than 50 MB.")
        return upload


class PledgeConfirmForm(forms.Form):
    """The upload the operator has just checked, kept on the server: importing it needs no second upload."""

    bot = forms.ModelChoiceField(queryset=Bot.objects.filter(is_active=True), widget=forms.HiddenInput)
    token = forms.CharField(widget=forms.HiddenInput)


def run_import(bot: Bot, path: Path, dry_run: bool) -> ImportResult:
    with path.open(encoding="utf-8-sig", newline="") as file:
        return import_pledges(bot, file, dry_run=dry_run, skip_errors=True)


class PledgeChangeList(ChangeList):
    def totals(self) -> list[dict]:
        """Pledged, paid and balance of everything the filters select, per currency: one query."""
        balance = Greatest(F("amount") - F("paid_amount"), Value(Decimal("0")))
        return list(
            self.queryset.order_by()
            .values("currency")
            .annotate(pledges=Count("id"), pledged=Sum("amount"), paid=Sum("paid_amount"), balance=Sum(balance))
            .order_by("currency")
        )


@admin.register(Pledge)
class PledgeAdmin(admin.ModelAdmin):
    list_display = [
        "name_display",
        "who",
        "amount_display",
        "paid_display",
        "balance_display",
        "due_date",
        "days_remaining_display",
        "campaign",
        "bot",
    ]
    list_filter = ["campaign", "currency", OverdueFilter, "bot"]
    search_fields = ["=telegram_id", "name", "campaign"]  # and the member's names: get_search_results
    search_help_text = "Searches the Telegram id, the name, the member's name and username, and the campaign."
    list_select_related = ["member", "bot"]
    raw_id_fields = ["member"]
    show_full_result_count = False
    actions = ["broadcast_to_members"]

    def get_urls(self):
        def route(suffix: str, view, name: str):
            return path(suffix, self.admin_site.admin_view(view), name=f"{self.opts.app_label}_pledge_{name}")

        return [
            route("import/", self.import_view, "import"),
            route("export/", self.export_view, "export"),
            *super().get_urls(),
        ]

    def get_changelist(self, request: HttpRequest, **kwargs) -> type[ChangeList]:
        return PledgeChangeList

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str) -> tuple[QuerySet, bool]:
        """Every word in the Telegram id, name or campaign, or the member's names: the member's
        by a subquery, as a join to every member made each of the page's three queries scan
        both tables (0.3 s each with 100,000 pledges on PostgreSQL)."""
        for word in search_words(search_term):
            members = TelegramUser.objects.filter(
                Q(first_name__icontains=word) | Q(last_name__icontains=word) | Q(username__icontains=word)
            )
            found = Q(name__icontains=word) | Q(campaign__icontains=word) | Q(member__in=members.values("pk"))
            if word.lstrip("-").isdigit():
                found |= Q(telegram_id=int(word))
            queryset = queryset.filter(found)
        return queryset, False

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        extra_context = {**(extra_context or {}), "can_import": self.has_import_permission(request)}
        response = super().changelist_view(request, extra_context)
        cl = getattr(response, "context_data", {}).get("cl")
        if isinstance(cl, PledgeChangeList):
            response.context_data["totals"] = cl.totals()
            response.context_data["export_url"] = f"{self._url('export')}{cl.get_query_string()}"
        return response

    def has_import_permission(self, request: HttpRequest) -> bool:
        return self.has_add_permission(request) and self.has_change_permission(request)

    def _url(self, name: str) -> str:
        return reverse(f"{self.admin_site.name}:{self.opts.app_label}_pledge_{name}")

    def import_view(self, request: HttpRequest) -> HttpResponse:
        """GET: the upload form. POST of a file: keep it and show what importing it would do.
        POST of a kept file's token: import it."""
        if not self.has_import_permission(request):
            raise PermissionDenied
        discard_stale_uploads()
        if request.method == "POST" and "token" in request.POST:
            return self._import_kept(request, PledgeConfirmForm(request.POST))
        form = PledgeUploadForm(request.POST, request.FILES) if request.method == "POST" else PledgeUploadForm()
        if not (form.is_bound and form.is_valid()):
            return self._import_page(request, form)
        bot = form.cleaned_data["bot"]
        token = keep_upload(form.cleaned_data["file"].chunks())
        result = run_import(bot, kept_upload(token), dry_run=True)
        if not result.valid_rows:
            discard_upload(token)
            return self._import_page(request, form, result)
        confirm = PledgeConfirmForm(initial={"bot": bot, "token": token})
        return self._import_page(request, PledgeUploadForm(initial={"bot": bot}), result, confirm)

    def _import_kept(self, request: HttpRequest, confirm: PledgeConfirmForm) -> HttpResponse:
        kept = kept_upload(confirm.data.get("token", ""))
        if not (confirm.is_valid() and kept):
            self.message_user(request, "That file is no longer here (kept for a day); choose it again.", messages.ERROR)
            return HttpResponseRedirect(self._url("import"))
        try:
            result = run_import(confirm.cleaned_data["bot"], kept, dry_run=False)
        finally:
            discard_upload(confirm.cleaned_data["token"])
        self.message_user(request, result.summary(), messages.SUCCESS if result.applied else messages.ERROR)
        return HttpResponseRedirect(self._url("changelist"))

    def _import_page(self, request, form, result=None, confirm=None) -> HttpResponse:
        context = {
            **self.admin_site.each_context(request),
            "title": "Import pledges from CSV",
            "opts": self.opts,
            "form": form,
            "result": result,
            "confirm": confirm,
            "samples": [(action, getattr(result, action), result.samples[action]) for action in ACTIONS]
            if result
            else [],
            "required_columns": REQUIRED_COLUMNS,
            "optional_columns": OPTIONAL_COLUMNS,
            "changelist_url": self._url("changelist"),
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/broadcasts/pledge/import.html", context)

    def export_view(self, request: HttpRequest) -> HttpResponse:
        """The pledges the changelist shows with the same filters, search and order, as CSV."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        try:
            cl = self.get_changelist_instance(request)
        except IncorrectLookupParameters:
            return HttpResponseRedirect(self._url("changelist"))
        return pledges_csv(cl.queryset)

    @admin.action(description="Broadcast to these members", permissions=["view"])
    def broadcast_to_members(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        """A draft broadcast to the hand-picked members of the selected pledges (those who have /started)."""
        if not request.user.has_perm("broadcasts.add_broadcast"):
            self.message_user(request, "You may not create broadcasts.", messages.ERROR)
            return None
        with_members = queryset.filter(member__isnull=False)
        bots = list(with_members.order_by().values_list("bot", flat=True).distinct()[:2])
        if len(bots) != 1:
            problem = "pledges of more than one bot" if bots else "no pledge whose member has pressed /start"
            self.message_user(request, f"Nothing to broadcast to: the selection has {problem}.", messages.ERROR)
            return None
        members = with_members.order_by().values_list("member", flat=True).distinct()
        with transaction.atomic():
            broadcast = Broadcast.objects.create(
                bot_id=bots[0], audience=Audience.HAND_PICKED, created_by=request.user, title="To selected pledges"
            )
            broadcast.members.set(members)
        count = broadcast.members.count()
        broadcast.title = f"To {count} members of selected pledges"
        broadcast.save(update_fields=["title"])
        self.log_addition(request, broadcast, "Composed from selected pledges.")
        self.message_user(request, f"A draft broadcast to {count} members: write the message, then send it.")
        return HttpResponseRedirect(reverse(f"{self.admin_site.name}:broadcasts_broadcast_change", args=[broadcast.pk]))

    @admin.display(description="name", ordering="name")
    def name_display(self, pledge: Pledge) -> str:
        return pledge.name or "-"

    @admin.display(description="member", ordering="telegram_id")
    def who(self, pledge: Pledge) -> str:
        return str(pledge.member) if pledge.member else f"{pledge.telegram_id} (not started)"

    @admin.display(description="amount", ordering="amount")
    def amount_display(self, pledge: Pledge) -> str:
        return pledge.format(pledge.amount)

    @admin.display(description="paid", ordering="paid_amount")
    def paid_display(self, pledge: Pledge) -> str:
        return pledge.format(pledge.paid_amount)

    @admin.display(description="balance")
    def balance_display(self, pledge: Pledge) -> str:
        return pledge.format(pledge.balance)

    @admin.display(description="days remaining", ordering="due_date")
    def days_remaining_display(self, pledge: Pledge) -> str:
        if pledge.is_overdue:
            return f"{pledge.days_overdue} day{pluralize(pledge.days_overdue)} overdue"
        if pledge.days_remaining is None:
            return "-"
        return str(pledge.days_remaining)


# ---------------------------------------------------------------------------------------------
# Message templates
# ---------------------------------------------------------------------------------------------


@admin.register(MessageTemplate)
class MessageTemplateAdmin(admin.ModelAdmin):
    list_display = ["name", "parse_mode", "excerpt"]
    search_fields = ["name", "text"]
    fields = ["name", "text", "parse_mode", "placeholders", "warnings"]
    readonly_fields = ["placeholders", "warnings"]

    @admin.display(description="text")
    def excerpt(self, template: MessageTemplate) -> str:
        return template.text if len(template.text) <= 80 else f"{template.text[:79]}…"

    @admin.display(description="placeholders")
    def placeholders(self, template: MessageTemplate) -> str:
        return format_html("<ul>{}</ul>", format_html_join("", "<li><code>#{}</code>: {}</li>", PLACEHOLDERS.items()))

    @admin.display(description="warnings")
    def warnings(self, template: MessageTemplate) -> str:
        unknown = unknown_hashtags(template.text)
        if not unknown:
            return "-"
        return f"Not placeholders, sent as written: {', '.join(unknown)}"


# ---------------------------------------------------------------------------------------------
# Broadcasts and deliveries
# ---------------------------------------------------------------------------------------------


class ButtonsField(forms.CharField):
    """URL buttons as lines of "Text | https://url", stored as [{"text": ..., "url": ...}]."""

    widget = forms.Textarea(attrs={"rows": 3, "placeholder": "Pay now | https://example.org/pay"})

    def prepare_value(self, value):
        if isinstance(value, list):
            return "\n".join(f"{b.get('text', '')} | {b.get('url', '')}" for b in value)
        return value

    def to_python(self, value) -> list[dict[str, str]]:
        buttons, errors = [], []
        for number, line in enumerate((value or "").splitlines(), start=1):
            if not line.strip():
                continue
            text, bar, url = (part.strip() for part in line.rpartition("|"))
            if not bar or not text:
                errors.append(f'Line {number}: write "Button text | https://url".')
            elif not _is_https_url(url):
                errors.append(f"Line {number}: {url!r} is not an https:// URL.")
            else:
                buttons.append({"text": text, "url": url})
        if errors:
            raise forms.ValidationError(errors)
        return buttons


def _is_https_url(url: str) -> bool:
    try:
        URLValidator(schemes=["https"])(url)
    except forms.ValidationError:
        return False
    return True


class BroadcastForm(forms.ModelForm):
    buttons = ButtonsField(
        required=False, help_text='One button a line: "Text | https://url". Telegram only accepts https links here.'
    )

    class Meta:
        model = Broadcast
        fields = [
            "bot",
            "title",
            "text",
            "template",
            "parse_mode",
            "photo",
            "document",
            "buttons",
            "stop_button_text",
            "audience",
            "audience_value",
            "members",
            "no_pledge_fallback",
            "allow_paid_broadcast",
            "scheduled_at",
            "window_start",
            "window_end",
            "window_timezone",
            "ab_sample_percent",
            "ab_wait",
            "ab_measure",
            "ab_send_winner",
        ]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        field = self.fields.get("bot")
        if field is None or self.instance.pk is not None:
            return
        bots = list(field.queryset.filter(is_active=True)[:2])
        if len(bots) == 1:
            field.initial = bots[0]

    def clean(self) -> dict:
        data = super().clean()
        if not data.get("text", "").strip() and not data.get("template"):
            self.add_error("text", "Write a text or choose a template.")
        if data.get("photo") and data.get("document"):
            self.add_error("document", "Attach a photo or a document, not both.")
        audience = data.get("audience")
        if audience in (Audience.CAMPAIGN, Audience.LANGUAGE) and not data.get("audience_value", "").strip():
            what = "campaign" if audience == Audience.CAMPAIGN else "language code (e.g. en)"
            self.add_error("audience_value", f"Give the {what} for this audience.")
        elif audience and data.get("bot"):
            given = Broadcast(bot=data["bot"], audience=audience, audience_value=data.get("audience_value", ""))
            mistake = audience_mistake(given)
            if mistake:
                self.add_error("audience_value" if audience != Audience.STAFF else "audience", mistake)
        if self.instance.status == Broadcast.Status.SCHEDULED and not data.get("scheduled_at"):
            self.add_error("scheduled_at", "A scheduled broadcast needs its time; cancel it to call it off.")
        if audience == Audience.HAND_PICKED and "members" in data and not data["members"]:
            self.add_error("members", "Pick at least one member for the hand-picked audience.")
        self._clean_window(data)
        return data

    def _clean_window(self, data: dict) -> None:
        start, end, name = data.get("window_start"), data.get("window_end"), data.get("window_timezone", "")
        if start is None and end is None:
            if name:
                self.add_error("window_start", "Give the window's start and end, or leave the time zone empty.")
            return
        if start is None or end is None:
            self.add_error("window_end" if end is None else "window_start", "A send window needs a start and an end.")
            return
        try:
            Broadcast(window_start=start, window_end=end, window_timezone=name).send_window  # noqa: B018
        except BadZone as exc:
            self.add_error("window_timezone", str(exc))
        except ValueError as exc:
            self.add_error("window_end", str(exc))


class MessageVersionForm(forms.ModelForm):
    buttons = ButtonsField(required=False, help_text="Empty: the arm's fallback's buttons, or the broadcast's.")

    class Meta:
        model = MessageVersion
        fields = ["arm", "language", "text", "buttons", "stop_button_text", "photo"]

    def clean_language(self) -> str:
        return self.cleaned_data.get("language", "").strip().lower()

    def clean(self) -> dict:
        data = super().clean()
        if data.get("arm") == "A" and not data.get("language"):
            self.add_error("language", "Arm A without a language is the broadcast's own message: give a language.")
        return data


class MessageVersionFormSet(forms.BaseInlineFormSet):
    def clean(self) -> None:
        super().clean()
        kept = [
            (form.cleaned_data["arm"], form.cleaned_data.get("language", ""))
            for form in self.forms
            if form.cleaned_data.get("arm") and not form.cleaned_data.get("DELETE")
        ]
        if missing := variants.missing_fallbacks(kept):
            raise forms.ValidationError(
                f"Arm {', '.join(missing)} needs a version without a language: the members of that arm whose "
                "language has no version of their own get it."
            )


class MessageVersionInline(admin.StackedInline):
    """A/B arms B-D and versions per language (broadcasts.variants)."""

    model = MessageVersion
    form = MessageVersionForm
    formset = MessageVersionFormSet
    extra = 0
    verbose_name = "message version (A/B arm or language)"

    def has_add_permission(self, request: HttpRequest, obj: Broadcast | None = None) -> bool:
        return (obj is None or obj.is_editable) and super().has_add_permission(request, obj)

    def has_change_permission(self, request: HttpRequest, obj: Broadcast | None = None) -> bool:
        return (obj is None or obj.is_editable) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Broadcast | None = None) -> bool:
        return (obj is None or obj.is_editable) and super().has_delete_permission(request, obj)


class BroadcastChangeList(ChangeList):
    def get_queryset(self, request: HttpRequest, exclude_parameters=None) -> QuerySet:
        def count(*statuses: str) -> Coalesce:
            """From the kept counts (broadcasts.delivery_counts): a million deliveries are not counted."""
            kept = DeliveryCount.objects.filter(broadcast=OuterRef("pk"))
            kept = kept.filter(status__in=statuses) if statuses else kept
            summed = kept.values("broadcast").annotate(total=Sum("n")).values("total")
            return Coalesce(Subquery(summed), 0, output_field=BigIntegerField())

        return (
            super()
            .get_queryset(request, exclude_parameters)
            .annotate(
                sent_count=count(Delivery.Status.SENT),
                failed_count=count(Delivery.Status.FAILED),
                skipped_count=count(Delivery.Status.SKIPPED),
                unknown_count=count(Delivery.Status.UNKNOWN),
                total_count=count(),
            )
        )


# Who did what when: shown, never edited.
STATE_FIELDS = [
    "status",
    "created_by",
    "created_at",
    "edited_by",
    "approved_by",
    "approved_at",
    "started_at",
    "finished_at",
]


@admin.register(Broadcast)
class BroadcastAdmin(admin.ModelAdmin):
    form = BroadcastForm
    list_display = [
        "__str__",
        "status_display",
        "audience",
        "deliveries_display",
        "when_display",
    ]
    actions = ["resend_unknown"]
    # Composing and stopping need change_broadcast; what sends messages needs send_broadcast too.
    SENDING_ACTIONS = {"resume", "retry-failed", "send-winner"}
    list_filter = ["status", "audience", "bot"]
    search_fields = ["title", "text"]
    list_select_related = ["bot"]
    autocomplete_fields = ["members"]
    inlines = [MessageVersionInline]
    fieldsets = [
        (None, {"fields": ["bot", "title"]}),
        (
            "Message",
            {
                "fields": [
                    "text",
                    "template",
                    "parse_mode",
                    "placeholders",
                    "photo",
                    "document",
                    "buttons",
                    "stop_button_text",
                ]
            },
        ),
        ("Audience", {"fields": ["audience", "audience_value", "members", "no_pledge_fallback"]}),
        (
            "Sending",
            {"fields": ["allow_paid_broadcast", "scheduled_at", "window_start", "window_end", "window_timezone"]},
        ),
        (
            "A/B test",
            {
                "fields": ["ab_sample_percent", "ab_wait", "ab_measure", "ab_send_winner", "ab_winner"],
                "classes": ["collapse"],
                "description": "With message versions of arms B-D below: how the arms are compared.",
            },
        ),
        (
            "State",
            {
                "fields": STATE_FIELDS,
                "classes": ["collapse"],
            },
        ),
    ]
    readonly_fields = ["placeholders", *STATE_FIELDS, "ab_winner"]

    def get_fieldsets(self, request: HttpRequest, obj: Broadcast | None = None) -> list:
        """A new broadcast has no state to show yet."""
        return self.fieldsets if obj else [(name, opts) for name, opts in self.fieldsets if name != "State"]

    def get_changelist(self, request: HttpRequest, **kwargs) -> type[ChangeList]:
        return BroadcastChangeList

    def get_readonly_fields(self, request: HttpRequest, obj: Broadcast | None = None) -> list[str]:
        if obj is not None and not obj.is_editable:
            return [f for fields in (opts["fields"] for _, opts in self.fieldsets) for f in fields]
        return self.readonly_fields

    def has_delete_permission(self, request: HttpRequest, obj: Broadcast | None = None) -> bool:
        if obj is not None and obj.status in (Broadcast.Status.SENDING, Broadcast.Status.PAUSED):
            return False
        return super().has_delete_permission(request, obj)

    def save_model(self, request: HttpRequest, obj: Broadcast, form: forms.ModelForm, change: bool) -> None:
        if obj.created_by_id is None:
            obj.created_by = request.user
        if form.has_changed():
            obj.edited_by = request.user
            if obj.approved_by_id is not None:
                obj.withdraw_approval()
                self.log_change(request, obj, "Approval withdrawn: edited after approval.")
                self.message_user(request, "Edited after approval: it needs approving again.", messages.WARNING)
        super().save_model(request, obj, form, change)
        unknown = unknown_hashtags(obj.body)
        if unknown:
            self.message_user(
                request,
                f"Not placeholders, sent as written: {', '.join(unknown)}. "
                f"Placeholders are {', '.join('#' + name for name in PLACEHOLDERS)}.",
                messages.WARNING,
            )

    def save_related(self, request: HttpRequest, form: forms.ModelForm, formsets, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        for version in form.instance.versions.all():
            if unknown := unknown_hashtags(version.text):
                self.message_user(
                    request,
                    f"Arm {version.arm} {version.language or 'fallback'}: not placeholders, sent as written: "
                    f"{', '.join(unknown)}.",
                    messages.WARNING,
                )

    def render_change_form(self, request: HttpRequest, context: dict, *args, obj: Broadcast | None = None, **kwargs):
        unknown = obj.deliveries.filter(status=Delivery.Status.UNKNOWN).count() if obj else 0
        return super().render_change_form(request, {**context, "unknown_count": unknown}, *args, obj=obj, **kwargs)

    def response_add(self, request: HttpRequest, obj: Broadcast, post_url_continue: str | None = None) -> HttpResponse:
        if "_preview" in request.POST:
            return HttpResponseRedirect(self._url("preview", obj.pk))
        return super().response_add(request, obj, post_url_continue)

    def response_change(self, request: HttpRequest, obj: Broadcast) -> HttpResponse:
        if "_preview" in request.POST:
            return HttpResponseRedirect(self._url("preview", obj.pk))
        return super().response_change(request, obj)

    @admin.display(description="placeholders")
    def placeholders(self, broadcast: Broadcast | None = None) -> str:
        return format_html_join(" ", '<code title="{}">#{}</code>', ((h, name) for name, h in PLACEHOLDERS.items()))

    @admin.display(description="status", ordering="status")
    def status_display(self, broadcast: Broadcast) -> str:
        if not broadcast.is_stalled:
            return broadcast.get_status_display()
        return format_html(
            '{}<br><span class="broadcast-stall">{}</span>', broadcast.get_status_display(), broadcast.stall_reason
        )

    @admin.display(description="deliveries", ordering="total_count")
    def deliveries_display(self, broadcast: Broadcast) -> str:
        """The outcomes in one column, so the list reads at 1280 px: "12 sent · 2 failed ·
        6 unknown of 20", failed and unknown in red, other zeros left out; a link to the progress."""
        if broadcast.is_editable:
            return format_html('<a href="{}">Preview</a>', self._url("preview", broadcast.pk))
        outcomes = [
            (broadcast.sent_count, "sent", "", ""),
            (broadcast.failed_count, "failed", "broadcast-bad", ""),
            (broadcast.skipped_count, "skipped", "", ""),
            (broadcast.unknown_count, "unknown", "broadcast-bad", "Sent, but no answer came back: may have arrived"),
        ]
        summary = format_html_join(
            " · ",
            '<span class="{}" title="{}">{} {}</span>',
            ((css, title, n, label) for n, label, css, title in outcomes if n or label == "sent"),
        )
        return format_html(
            '<a href="{}">{}</a> <span class="broadcast-of">of {}</span>',
            self._url("progress", broadcast.pk),
            summary,
            broadcast.total_count,
        )

    @admin.display(description="when", ordering="created_at")
    def when_display(self, broadcast: Broadcast) -> str:
        if broadcast.status == Broadcast.Status.SCHEDULED or (broadcast.is_editable and broadcast.scheduled_at):
            what, moment = "scheduled", broadcast.scheduled_at
        elif broadcast.started_at:
            what, moment = "started", broadcast.started_at
        else:
            what, moment = "created", broadcast.created_at
        return f"{what} {date_format(timezone.localtime(moment), 'j M Y, H:i')}"

    # -- extra pages ---------------------------------------------------------------------------

    def _url(self, view: str, *args) -> str:
        return reverse(f"{self.admin_site.name}:{self.opts.app_label}_{self.opts.model_name}_{view}", args=args)

    def get_urls(self) -> list:
        def route(suffix: str, view, name: str):
            wrapped = self.admin_site.admin_view(view)
            return path(f"<int:pk>/{suffix}", wrapped, name=f"{self.opts.app_label}_{self.opts.model_name}_{name}")

        link_telegram = self.admin_site.admin_view(self.link_telegram_view)
        return [
            path("link-telegram/", link_telegram, name=f"{self.opts.app_label}_{self.opts.model_name}_link_telegram"),
            route("preview/", require_safe(self.preview_view), "preview"),
            route("confirm/", self.confirm_view, "confirm"),
            route("test-send/", require_POST(self.test_send_view), "test_send"),
            route("progress/", require_safe(self.progress_view), "progress"),
            route("progress.json", require_safe(self.progress_json_view), "progress_json"),
            route("results/", require_safe(self.results_view), "results"),
            route("results.json", require_safe(self.results_json_view), "results_json"),
            route("action/<slug:action>/", self.action_view, "action"),
            route("approve/", require_POST(self.approve_view), "approve"),
            route("resend-unknown/", self.resend_unknown_view, "resend_unknown"),
            *super().get_urls(),
        ]

    def _broadcast(self, request: HttpRequest, pk: int) -> Broadcast:
        broadcast = Broadcast.objects.select_related("bot", "template").filter(pk=pk).first()
        if broadcast is None:
            raise Http404("No such broadcast.")
        if not self.has_change_permission(request, broadcast):
            raise PermissionDenied
        return broadcast

    def _context(self, request: HttpRequest, broadcast: Broadcast, title: str) -> dict:
        return {
            **self.admin_site.each_context(request),
            "title": title,
            "opts": self.opts,
            "original": broadcast,
            "broadcast": broadcast,
            "change_url": self._url("change", broadcast.pk),
            "progress_url": self._url("progress", broadcast.pk),
            "results_url": self._url("results", broadcast.pk),
        }

    def preview_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        broadcast = self._broadcast(request, pk)
        context = {
            **self._context(request, broadcast, f"Preview of {broadcast}"),
            "preview": Preview.of(broadcast),
            "refusal": refusal(broadcast) if broadcast.is_editable else None,
            "sending_refusal": self._sending_refusal(request, broadcast),
            "may_approve": controls.approver_refusal(broadcast, request.user) is None,
            "approve_url": self._url("approve", broadcast.pk),
            "unknown_hashtags": unknown_hashtags(broadcast.body),
            "split": variants.Split(broadcast).counts(recipients(broadcast)),
            "ab_test": ab_test_in_words(broadcast, variants.Split(broadcast)),
            "versions": broadcast.versions.all(),
            "operator": OperatorLink.objects.linked_member(request.user, broadcast.bot),
            "confirm_url": self._url("confirm", broadcast.pk),
            "test_send_url": self._url("test_send", broadcast.pk),
            "clicks": clicks.tracking(broadcast),
            "link_telegram_url": f"{self._url('link_telegram')}?bot={broadcast.bot_id}",
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/broadcasts/broadcast/preview.html", context)

    def confirm_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """GET: what sending (or scheduling, with ?schedule) would do, to confirm; only the
        confirmation's POST sends or schedules."""
        broadcast = self._broadcast(request, pk)
        if request.method == "POST":
            return self._send_or_schedule(request, broadcast)
        if not broadcast.is_editable:
            self.message_user(request, f"This broadcast is {broadcast.status} already.", messages.WARNING)
            return HttpResponseRedirect(self._url("progress", broadcast.pk))
        refused = self._sending_refusal(request, broadcast)
        if refused:
            self.message_user(request, f"It cannot be sent now: {refused}", messages.ERROR)
            return HttpResponseRedirect(self._url("preview", broadcast.pk))
        schedule = "schedule" in request.GET and broadcast.scheduled_at is not None
        title = f"Schedule {broadcast}?" if schedule else f"Send {broadcast} now?"
        context = {
            **self._context(request, broadcast, title),
            "summary": send_summary(broadcast),
            "window_opens": _window_opens(broadcast),
            "clicks": clicks.tracking(broadcast),
            "schedule": schedule,
            "preview_url": self._url("preview", broadcast.pk),
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/broadcasts/broadcast/confirm.html", context)

    def test_send_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """POST: the broadcast as the chosen member gets it, marked as a test, to the
        operator's own Telegram account."""
        broadcast = self._broadcast(request, pk)
        operator = OperatorLink.objects.linked_member(request.user, broadcast.bot)
        if operator is None:
            self.message_user(request, "Link your Telegram account first, then send the test.", messages.WARNING)
            return HttpResponseRedirect(f"{self._url('link_telegram')}?bot={broadcast.bot_id}")
        chosen = request.POST.get("member", "")
        member = (
            TelegramUser.objects.filter(bot=broadcast.bot, pk=int(chosen)).first() if chosen.isdigit() else None
        ) or operator
        send_test.enqueue_with(
            args=[broadcast.pk, member.pk, operator.pk], label=f"broadcast {broadcast.pk}: test as {member}"
        )
        self.message_user(
            request, f"A test, as {member} gets it, is on its way to your Telegram ({operator}).", messages.SUCCESS
        )
        return HttpResponseRedirect(self._url("preview", broadcast.pk))

    def link_telegram_view(self, request: HttpRequest) -> HttpResponse:
        """Link my Telegram: a one-time deep link to the bot; pressing Start on it links the
        account (bots.handlers.start). POST makes a new link."""
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        bots = list(Bot.objects.filter(is_active=True).order_by("pk"))
        chosen = request.POST.get("bot") or request.GET.get("bot", "")
        bot = next((b for b in bots if str(b.pk) == chosen), bots[0] if bots else None)
        here = f"{self._url('link_telegram')}?bot={bot.pk}" if bot else self._url("link_telegram")
        if request.method == "POST" and bot:
            if bot.username or self._learn_username(request, bot):
                OperatorLink.objects.create(user=request.user, bot=bot, code=OperatorLink.new_code())
            return HttpResponseRedirect(here)
        links = OperatorLink.objects.filter(user=request.user, bot=bot).select_related("bot")
        waiting = links.filter(linked_at__isnull=True, created_at__gte=timezone.now() - OperatorLink.VALID_FOR)
        context = {
            **self.admin_site.each_context(request),
            "title": "Link my Telegram",
            "opts": self.opts,
            "bots": bots,
            "bot": bot,
            "linked": OperatorLink.objects.linked_member(request.user, bot) if bot else None,
            "waiting": waiting.order_by("-created_at").first(),
            "valid_minutes": int(OperatorLink.VALID_FOR.total_seconds() // 60),
            "here": here,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/broadcasts/broadcast/link_telegram.html", context)

    def _learn_username(self, request: HttpRequest, bot: Bot) -> bool:
        """A deep link names the bot by its username: ask Telegram once when it is not known."""
        try:
            bot.username = call(bot, "get_me").username
        except Exception as exc:
            self.message_user(
                request,
                f"Telegram did not say the bot's username ({type(exc).__name__}); enter it on the bot's page.",
                messages.ERROR,
            )
            return False
        bot.save(update_fields=["username"])
        return True

    def _send_or_schedule(self, request: HttpRequest, broadcast: Broadcast) -> HttpResponse:
        refused = self._sending_refusal(request, broadcast)
        if refused:
            self.message_user(request, f"Not sent: {refused}", messages.ERROR)
            return HttpResponseRedirect(self._url("preview", broadcast.pk))
        if "_schedule" in request.POST:
            if self._control(request, controls.schedule, broadcast):
                return HttpResponseRedirect(self._url("changelist"))
            return HttpResponseRedirect(self._url("preview", broadcast.pk))
        if "_send" in request.POST:
            self._control(request, controls.send, broadcast)
            return HttpResponseRedirect(self._url("progress", broadcast.pk))
        return HttpResponseRedirect(self._url("preview", broadcast.pk))

    def _sending_refusal(self, request: HttpRequest, broadcast: Broadcast) -> str | None:
        """Why this user may not send or schedule it now (the preview shows it by the buttons)."""
        if not broadcast.is_editable:
            return None
        if not request.user.has_perm(controls.SEND_PERMISSION):
            return "you may compose broadcasts but not send them (that needs the “send broadcasts” permission)."
        return refusal(broadcast) or controls.approval_refusal(broadcast)

    def approve_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        broadcast = self._broadcast(request, pk)
        self._control(request, controls.approve, broadcast)
        return HttpResponseRedirect(self._url("preview", broadcast.pk))

    def progress_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        broadcast = self._broadcast(request, pk)
        progress = broadcast.progress()
        arms = variants.arm_progress(broadcast)
        context = {
            **self._context(request, broadcast, f"Progress of {broadcast}"),
            "progress": progress,
            "parts": [
                {"outcome": outcome, "count": progress["counts"][outcome], "label": Delivery.Status(outcome).label}
                for outcome in Broadcast.OUTCOMES
            ],
            "may_send": request.user.has_perm(controls.SEND_PERMISSION),
            "json_url": self._url("progress_json", broadcast.pk),
            "arms": arms,
            # Only A/B tests have one: it reads every sent delivery of a finished broadcast.
            "winner_due_at": variants.winner_due_at(broadcast) if arms and broadcast.ab_send_winner else None,
            "deliveries_url": reverse(f"{self.admin_site.name}:broadcasts_delivery_changelist")
            + f"?broadcast__id__exact={broadcast.pk}",
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/broadcasts/broadcast/progress.html", context)

    def progress_json_view(self, request: HttpRequest, pk: int) -> JsonResponse:
        broadcast = self._broadcast(request, pk)
        return JsonResponse({**broadcast.progress(), "arms": variants.arm_progress(broadcast)})

    def results_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        broadcast = self._broadcast(request, pk)
        figures = results.results(broadcast)
        context = {
            **self._context(request, broadcast, f"Results of {broadcast}"),
            "results": figures,
            "groupings": [
                {
                    "key": key,
                    "heading": heading,
                    "rows": [{**row, "value": row[field], "label": row[field] or blank} for row in figures[key]],
                }
                for key, field, heading, blank in [
                    ("arms", "arm", "A/B arm", "none"),
                    ("languages", "language", "Language", "fallback"),
                ]
            ],
            "chart": results.chart(results.per_minute(broadcast)),
            "json_url": self._url("results_json", broadcast.pk),
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/broadcasts/broadcast/results.html", context)

    def results_json_view(self, request: HttpRequest, pk: int) -> JsonResponse:
        return JsonResponse(results.results(self._broadcast(request, pk)))

    def action_view(self, request: HttpRequest, pk: int, action: str) -> HttpResponse:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        broadcast = self._broadcast(request, pk)
        control = {
            "pause": controls.pause,
            "resume": controls.resume,
            "cancel": controls.cancel,
            "retry-failed": controls.retry_failed,
            "send-winner": controls.send_winner,
        }.get(action)
        if control is None:
            raise Http404("No such action.")
        if action in self.SENDING_ACTIONS and not request.user.has_perm(controls.SEND_PERMISSION):
            raise PermissionDenied
        self._control(request, control, broadcast)
        return HttpResponseRedirect(self._url("progress", broadcast.pk))

    def _control(self, request: HttpRequest, control, broadcast: Broadcast) -> bool:
        """Run one of broadcasts.controls as this user and tell them how it went."""
        try:
            self.message_user(request, control(broadcast, request.user), messages.SUCCESS)
        except controls.Refused as refused:
            self.message_user(request, str(refused), messages.ERROR)
            return False
        return True

    def resend_unknown_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """GET: the confirmation page; POST: resend, then back to the progress page."""
        broadcast = self._broadcast(request, pk)
        if request.method != "POST":
            return self._confirm_resend(request, [broadcast], form_url=self._url("resend_unknown", pk))
        self._resend_unknown(request, [broadcast])
        return HttpResponseRedirect(self._url("progress", broadcast.pk))

    @admin.action(description="Resend to unknown deliveries of the selected broadcasts", permissions=["change"])
    def resend_unknown(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        broadcasts = list(queryset)
        if request.POST.get("post") != "yes":
            return self._confirm_resend(request, broadcasts, form_url="")
        self._resend_unknown(request, broadcasts)
        return None

    def _confirm_resend(self, request: HttpRequest, broadcasts: list[Broadcast], form_url: str) -> HttpResponse:
        unknown = dict(
            Delivery.objects.filter(broadcast__in=broadcasts, status=Delivery.Status.UNKNOWN)
            .sendable_again()
            .values_list("broadcast")
            .annotate(n=Count("id"))
            .order_by()
        )
        deliveries = reverse(f"{self.admin_site.name}:broadcasts_delivery_changelist")
        context = {
            **self.admin_site.each_context(request),
            "title": "Resend to unknown deliveries?",
            "opts": self.opts,
            "rows": [
                (b, unknown.get(b.pk, 0), f"{deliveries}?broadcast__id__exact={b.pk}&status__exact=unknown")
                for b in broadcasts
            ],
            "total_unknown": sum(unknown.values()),
            "form_url": form_url,
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
            "back_url": self._url("progress", broadcasts[0].pk) if form_url else self._url("changelist"),
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/broadcasts/broadcast/resend_unknown.html", context)

    def _resend_unknown(self, request: HttpRequest, broadcasts: list[Broadcast]) -> None:
        if not request.user.has_perm(controls.SEND_PERMISSION):
            raise PermissionDenied
        resent = sum(controls.resend_unknown(broadcast, request.user) for broadcast in broadcasts)
        if resent:
            self.message_user(
                request, f"Resending to {resent} unknown deliveries; some members may get it twice.", messages.SUCCESS
            )
        else:
            self.message_user(
                request,
                "No unknown delivery to resend (cancelled broadcasts and members who blocked the bot are not resent).",
                messages.WARNING,
            )


def _window_opens(broadcast: Broadcast) -> str:
    """For the confirmation: when sending can begin, in the window's zone, if the window is
    closed now (a template would show the time in the server's zone)."""
    window, now = broadcast.send_window, timezone.now()
    if window is None or window.contains(now):
        return ""
    return f"{window.next_opening(now).astimezone(window.zone):%Y-%m-%d %H:%M} {window.zone.key}"


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    list_display = ["id", "broadcast", "member", "status", "attempts", "error_class", "error", "sent_at", "claimed_by"]
    list_filter = ["status", "error_class", "broadcast"]
    search_fields = ["=member__telegram_id", "member__first_name", "member__last_name", "member__username"]
    search_help_text = "Searches the member's Telegram id, name and username."
    list_select_related = ["broadcast", "member"]
    show_full_result_count = False
    list_per_page = 100

    def get_urls(self) -> list:
        export = self.admin_site.admin_view(self.export_view)
        return [path("export/", export, name="broadcasts_delivery_export"), *super().get_urls()]

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        response = super().changelist_view(request, extra_context)
        cl = getattr(response, "context_data", {}).get("cl")
        if cl is not None:
            export = reverse(f"{self.admin_site.name}:broadcasts_delivery_export")
            response.context_data["export_url"] = f"{export}{cl.get_query_string()}"
        return response

    def export_view(self, request: HttpRequest) -> HttpResponse:
        """The deliveries the changelist shows (filtered by broadcast, from its progress page), as CSV."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        try:
            cl = self.get_changelist_instance(request)
        except IncorrectLookupParameters:
            return HttpResponseRedirect(reverse(f"{self.admin_site.name}:broadcasts_delivery_changelist"))
        broadcast = request.GET.get("broadcast__id__exact", "")
        return deliveries_csv(cl.queryset, f"broadcast-{broadcast}-deliveries" if broadcast.isdigit() else "deliveries")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Delivery | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Delivery | None = None) -> bool:
        return False
