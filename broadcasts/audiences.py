"""Who a broadcast goes to. Every audience is a queryset of members, built in SQL so the
fan-out can copy it into deliveries in one statement; opted-out and blocked members are
never in any audience."""

from django.conf import settings
from django.db.models import Exists, F, OuterRef
from django.utils import timezone

from bots.models import TelegramUser
from broadcasts.models import Audience, Broadcast, Pledge


def recipients(broadcast: Broadcast):
    members = TelegramUser.objects.subscribed().filter(bot=broadcast.bot)
    return _narrow(broadcast, members)


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
            return members.filter(telegram_id__in=settings.OPERATOR_TELEGRAM_IDS)
    raise ValueError(f"Unknown audience {broadcast.audience!r}")
