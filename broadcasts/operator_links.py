"""The admin of linked Telegram accounts (OperatorLink): who gets "Send a test to me" and makes
up the Staff only audience. Links are made on "Link my Telegram" (BroadcastAdmin); here they are
seen and removed. An operator (who may send broadcasts) sees and removes their own; a user with
the bots app's permissions on links, every one."""

from django.contrib import admin
from django.urls import reverse
from django.utils import timezone

from bots.models import OperatorLink

SEND_PERMISSION = "broadcasts.change_broadcast"


class StateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [("linked", "Linked"), ("unused", "Not linked (waiting or expired)")]

    def queryset(self, request, queryset):
        if self.value() in ("linked", "unused"):
            return queryset.filter(linked_at__isnull=self.value() == "unused")
        return queryset


@admin.register(OperatorLink)
class OperatorLinkAdmin(admin.ModelAdmin):
    list_display = ["user", "account", "bot", "state", "linked_at"]
    list_filter = [StateFilter, "bot"]
    list_select_related = ["user", "member", "bot"]
    search_fields = ["user__username", "member__first_name", "member__username", "member__telegram_id"]
    fields = ["user", "bot", "account", "state", "created_at", "linked_at"]
    readonly_fields = fields
    ordering = ["-created_at"]

    @admin.display(description="Telegram account")
    def account(self, link: OperatorLink) -> str:
        return f"{link.member} ({link.member.telegram_id})" if link.member else "-"

    @admin.display(description="State")
    def state(self, link: OperatorLink) -> str:
        if link.linked_at:
            return "linked"
        if link.expires_at > timezone.now():
            return f"waiting for Start until {timezone.localtime(link.expires_at):%H:%M}"
        return "expired unused"

    def changelist_view(self, request, extra_context=None):
        link_page = reverse("admin:broadcasts_broadcast_link_telegram")
        extra_context = {**(extra_context or {}), "link_telegram_url": link_page}
        return super().changelist_view(request, extra_context)

    def get_queryset(self, request):
        links = super().get_queryset(request)
        return links if self._sees_all(request) else links.filter(user=request.user)

    def _sees_all(self, request) -> bool:
        return request.user.has_perm("bots.view_operatorlink")

    def _own(self, request, link: OperatorLink | None) -> bool:
        return request.user.has_perm(SEND_PERMISSION) and (link is None or link.user_id == request.user.pk)

    def has_module_permission(self, request) -> bool:
        return self._sees_all(request) or request.user.has_perm(SEND_PERMISSION)

    def has_view_permission(self, request, obj=None) -> bool:
        return self._sees_all(request) or self._own(request, obj)

    def has_delete_permission(self, request, obj=None) -> bool:
        return request.user.has_perm("bots.delete_operatorlink") or self._own(request, obj)

    def has_add_permission(self, request) -> bool:
        return False  # a link is made by pressing Start on a one-time deep link

    def has_change_permission(self, request, obj=None) -> bool:
        return False
