from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.defaultfilters import filesizeformat
from django.urls import reverse
from django.utils.html import format_html
from django.utils.text import Truncator

from bots.models import Bot, Download, MediaCache, TelegramUser, Update


class BotForm(forms.ModelForm):
    token = forms.CharField(
        widget=forms.PasswordInput(render_value=False),
        required=False,
        help_text="From @BotFather. Leave empty to keep the current token; it is never shown.",
    )

    class Meta:
        model = Bot
        fields = [
            "token",
            "username",
            "first_name",
            "webhook_secret",
            "api_base_url",
            "rate_limit",
            "paid_rate_limit",
            "is_active",
        ]
        widgets = {"webhook_secret": forms.PasswordInput(render_value=False)}

    def clean_token(self) -> str:
        token = self.cleaned_data["token"] or (self.instance.token if self.instance.pk else "")
        if not token:
            raise forms.ValidationError("A new bot needs its token.")
        try:
            Bot.id_from_token(token)
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None
        return token

    def clean_webhook_secret(self) -> str:
        return self.cleaned_data["webhook_secret"] or (self.instance.webhook_secret if self.instance.pk else "")


@admin.register(Bot)
class BotAdmin(admin.ModelAdmin):
    form = BotForm
    list_display = ["__str__", "telegram_id", "masked_token", "is_active", "send_rates", "webhook_url", "created_at"]
    readonly_fields = ["telegram_id", "masked_token", "webhook_url"]

    @admin.display(description="messages/s (paid)")
    def send_rates(self, bot: Bot) -> str:
        return f"{bot.send_limit():g} ({bot.send_limit(paid=True):g})"

    @admin.display(description="webhook path")
    def webhook_url(self, bot: Bot) -> str:
        return bot.webhook_path() if bot.pk else "-"


@admin.register(TelegramUser)
class TelegramUserAdmin(admin.ModelAdmin):
    list_display = ["__str__", "username", "telegram_id", "bot", "is_subscribed", "is_blocked", "last_seen"]
    list_filter = ["bot", "is_subscribed", "is_blocked", "language_code"]
    search_fields = ["first_name", "last_name", "username", "=telegram_id"]
    list_select_related = ["bot"]
    readonly_fields = ["first_seen", "last_seen", "subscribed_at", "opted_out_at", "blocked_at"]
    show_full_result_count = False


@admin.register(Update)
class UpdateAdmin(admin.ModelAdmin):
    list_display = ["update_id", "bot", "kind", "chat_id", "status", "attempts", "received_at", "processed_at"]
    list_filter = ["status", "bot"]
    search_fields = ["=update_id", "=chat_id", "error"]
    list_select_related = ["bot"]
    readonly_fields = [f.name for f in Update._meta.fields]
    show_full_result_count = False

    def has_add_permission(self, request) -> bool:
        return False


def _url_display(url: str) -> str:
    # Members' links, shown as text: an operator copies one rather than following it blind.
    return format_html('<span title="{}">{}</span>', url, Truncator(url).chars(80))


def _size_display(size: int | None) -> str:
    return filesizeformat(size) if size is not None else "-"


@admin.register(Download)
class DownloadAdmin(admin.ModelAdmin):
    """What members asked to download and how it ended, with a link to the job that did it.
    Read-only: the downloads queue writes these rows."""

    list_display = [
        "id",
        "url_display",
        "member",
        "status",
        "outcome",
        "size_display",
        "created_at",
        "took",
        "job_link",
    ]
    list_display_links = ["id"]
    list_filter = ["status", "kind", "from_cache", "bot"]
    search_fields = ["url", "=member__telegram_id", "member__username", "member__first_name", "error"]
    search_help_text = "Searches the link, the member (name, username or exact Telegram id) and the error."
    list_select_related = ["member"]
    date_hierarchy = "created_at"
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    fields = [
        "url",
        "bot",
        "member",
        "chat_id",
        "message_id",
        "status",
        "kind",
        "size_display",
        "from_cache",
        "error",
        "created_at",
        "finished_at",
        "took",
        "job_link",
    ]
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Download | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Download | None = None) -> bool:
        if obj is not None and obj.finished_at is None:
            return False
        return super().has_delete_permission(request, obj)

    @admin.display(description="URL", ordering="url")
    def url_display(self, download: Download) -> str:
        return _url_display(download.url)

    @admin.display(description="outcome")
    def outcome(self, download: Download) -> str:
        if download.status == Download.Status.SENT:
            return f"sent {download.kind} from the cache" if download.from_cache else f"sent {download.kind}"
        if download.status == Download.Status.FAILED:
            return format_html('<span title="{}">{}</span>', download.error, Truncator(download.error).chars(80))
        return "-"

    @admin.display(description="size", ordering="size")
    def size_display(self, download: Download) -> str:
        return _size_display(download.size)

    @admin.display(description="time")
    def took(self, download: Download) -> str:
        if download.finished_at is None:
            return "-"
        return f"{(download.finished_at - download.created_at).total_seconds():.1f} s"

    @admin.display(description="job", ordering="job")
    def job_link(self, download: Download) -> str:
        if download.job_id is None:
            return "-"
        url = reverse(f"{self.admin_site.name}:queueing_jobrecord_change", args=[download.job_id])
        return format_html('<a href="{}">job {}</a>', url, download.job_id)


@admin.register(MediaCache)
class MediaCacheAdmin(admin.ModelAdmin):
    """What Telegram already holds for a link. Read-only; forgetting an entry makes the next
    request for its link download it again (for a file that changed at its source)."""

    list_display = ["url_display", "bot", "kind", "title", "size_display", "format_key", "created_at"]
    list_filter = ["kind", "bot", "format_key"]
    search_fields = ["url", "title"]
    search_help_text = "Searches the link and the title."
    list_select_related = ["bot"]
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    actions = ["forget_selected"]
    fields = ["url", "bot", "kind", "title", "size_display", "format_key", "file_id", "created_at"]
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: MediaCache | None = None) -> bool:
        return False

    def get_actions(self, request: HttpRequest) -> dict:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    @admin.display(description="URL", ordering="url")
    def url_display(self, entry: MediaCache) -> str:
        return _url_display(entry.url)

    @admin.display(description="size", ordering="size")
    def size_display(self, entry: MediaCache) -> str:
        return _size_display(entry.size)

    @admin.action(description="Forget selected (their links are downloaded again next time)", permissions=["delete"])
    def forget_selected(self, request: HttpRequest, queryset: QuerySet) -> None:
        forgotten, _ = queryset.delete()
        self.message_user(request, f"Forgot {forgotten} cached media.", messages.SUCCESS)
