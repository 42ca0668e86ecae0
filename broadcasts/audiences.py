"""Who a broadcast goes to. Every audience is a queryset of members, built in SQL so the
fan-out can copy it into deliveries in one statement; opted-out and blocked members are
never in any audience. The staff audience is the operators who linked their Telegram
account in the admin, and the ids in OPERATOR_TELEGRAM_IDS. `refusal` says why a broadcast
must not be sent as it is."""

from difflib import get_close_matches

from django.conf import settings
from django.db.models import Count, Exists, F, OuterRef, Q
from django.utils import timezone

from bots.models import OperatorLink, TelegramUser
from broadcasts.models import Audience, Broadcast, Pledge


def recipients(broadcast: Broadcast):
    members = TelegramUser.objects.subscribed().filter(bot=broadcast.bot)
    return _narrow(broadcast, members)


def audience_members(broadcast: Broadcast):
    """Everyone the audience names, whether subscribed or not: recipients plus those left out."""
    return _narrow(broadcast, TelegramUser.objects.filter(bot=broadcast.bot))


def _narrow(broadcast: Broadcast, members):
    pledges = Pledge.objects.filter(member=OuterRef("pk"))
    owing = pledges.filter(amount__gt=F("paid_amount"))
    match broadcast.audience:
        case Audience.SUBSCRIBERS:
            return members
        case Audience.BALANCE_DUE:
            return members.filter(Exists(owing))
        case Audience.OVERDUE:
            return members.filter(Exists(owing.filter(due_date__lt=timezone.localdate())))
        case Audience.FULLY_PAID:
            return members.filter(Exists(pledges)).exclude(Exists(owing))
        case Audience.NO_PLEDGE:
            return members.exclude(Exists(pledges))
        case Audience.CAMPAIGN:
            return members.filter(Exists(pledges.filter(campaign=broadcast.audience_value)))
        case Audience.LANGUAGE:
            return members.filter(language_code__iexact=broadcast.audience_value)
        case Audience.HAND_PICKED:
            return members.filter(
                Exists(
                    Broadcast.members.through.objects.filter(broadcast_id=broadcast.pk, telegramuser_id=OuterRef("pk"))
                )
            )
        case Audience.STAFF:
            linked = Exists(OperatorLink.objects.filter(member=OuterRef("pk")))
            if not settings.OPERATOR_TELEGRAM_IDS:
                # `telegram_id__in=[]` cannot be compiled into the fan-out's INSERT ... SELECT.
                return members.filter(linked)
            return members.filter(linked | Q(telegram_id__in=settings.OPERATOR_TELEGRAM_IDS))
    raise ValueError(f"Unknown audience {broadcast.audience!r}")


def refusal(broadcast: Broadcast) -> str | None:
    """Why this broadcast must not be sent (or scheduled) as it is, worded for the operator;
    None when it may. The audience is counted now: it can have emptied since the draft."""
    if not broadcast.body.strip():
        return "The message is empty: write a text, or choose a template that has one."
    mistake = audience_mistake(broadcast)
    if mistake:
        return mistake
    if not recipients(broadcast).exists():
        return f"Nobody is in this audience ({broadcast.get_audience_display()}): there is no one to send it to."
    return None


def audience_mistake(broadcast: Broadcast) -> str | None:
    """What is wrong with how the audience is given (a campaign or language nobody has, a
    staff audience with no operators configured), whoever is subscribed today; None if nothing."""
    value = broadcast.audience_value.strip()
    match broadcast.audience:
        case Audience.STAFF if not (
            settings.OPERATOR_TELEGRAM_IDS
            or OperatorLink.objects.filter(bot_id=broadcast.bot_id, member__isnull=False).exists()
        ):
            return (
                "No operators are configured for the staff audience: link your Telegram account "
                "(“Link my Telegram” on the broadcasts page), or set OPERATOR_TELEGRAM_IDS "
                "(the operators' Telegram ids, comma-separated) in the environment."
            )
        case Audience.CAMPAIGN:
            return _unknown_campaign(broadcast.bot_id, value)
        case Audience.LANGUAGE:
            return _unknown_language(broadcast.bot_id, value)
    return None


def _unknown_campaign(bot_id: int, campaign: str) -> str | None:
    campaigns = list(
        Pledge.objects.filter(bot_id=bot_id).exclude(campaign="").values_list("campaign", flat=True).distinct()
    )
    if campaign in campaigns:
        return None
    if not campaigns:
        return f"No campaign named “{campaign}”: no pledge of this bot has a campaign yet."
    same_but_case = [c for c in campaigns if c.lower() == campaign.lower()]
    close = same_but_case + [c for c in get_close_matches(campaign, campaigns, n=3) if c not in same_but_case]
    hint = f" Did you mean {_quoted(close)}?" if close else ""
    return f"No campaign named “{campaign}”.{hint} Campaigns of this bot: {_quoted(sorted(campaigns)[:20])}."


def _unknown_language(bot_id: int, code: str) -> str | None:
    members = TelegramUser.objects.subscribed().filter(bot_id=bot_id)
    if members.filter(language_code__iexact=code).exists():
        return None
    spoken = members.exclude(language_code="").values_list("language_code").annotate(n=Count("id")).order_by("-n")
    known = ", ".join(f"{language} ({n})" for language, n in spoken[:20])
    return f"No subscriber has the language code “{code}”. Language codes of subscribers: {known or 'none known'}."


def _quoted(names: list[str]) -> str:
    return ", ".join(f"“{name}”" for name in names)
