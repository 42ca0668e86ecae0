from django import forms
from django.contrib import admin

from bots.models import Bot, TelegramUser, Update


class BotForm(forms.ModelForm):
    token = forms.CharField(
        widget=forms.PasswordInput(render_value=False),
        required=False,
        help_text="From @BotFather. Leave empty to keep the current token; it is never shown.",
    )

    class Meta:
        model = Bot
        fields = ["token", "username", "first_name", "webhook_secret", "api_base_url", "is_active"]
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
    list_display = ["__str__", "telegram_id", "masked_token", "is_active", "webhook_url", "created_at"]
    readonly_fields = ["telegram_id", "masked_token", "webhook_url"]

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
