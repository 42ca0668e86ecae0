"""/pledge: the member's pledges, or a new one recorded (/pledge 250). Registered with
bots.handlers in BroadcastsConfig.ready(), since bots does not import broadcasts."""

import re
from decimal import Decimal, InvalidOperation

from django.utils.formats import date_format, number_format
from django.utils.translation import gettext, ngettext, pgettext

from bots.handlers import Context
from broadcasts.models import Pledge

MAX_PLEDGE = Decimal("1000000000")
_AMOUNT = re.compile(r"^(\d{1,3}(,\d{3})+|\d+)(\.\d{1,2})?$")


def pledge(context: Context, argument: str) -> None:
    if argument:
        amount = parse_amount(argument)
        if amount is None:
            context.reply(
                gettext("I couldn't read “%(text)s” as an amount. Send a number, for example /pledge 250.")
                % {"text": argument[:40]}
            )
            return
        new = Pledge.objects.create(
            bot=context.bot, member=context.member, telegram_id=context.member.telegram_id, amount=amount
        )
        context.reply(gettext("Thank you! I recorded your pledge of %(amount)s.") % {"amount": money(new, new.amount)})
        return
    pledges = list(context.member.pledges.order_by("created_at"))
    if not pledges:
        context.reply(gettext("You have no pledge yet. Send /pledge 250 to pledge 250."))
        return
    context.reply("\n\n".join(describe_pledge(p) for p in pledges))


def describe_pledge(pledge: Pledge) -> str:
    amount = money(pledge, pledge.amount)
    lines = [
        gettext("Pledge: %(amount)s (%(campaign)s)") % {"amount": amount, "campaign": pledge.campaign}
        if pledge.campaign
        else gettext("Pledge: %(amount)s") % {"amount": amount},
        gettext("Paid: %(amount)s") % {"amount": money(pledge, pledge.paid_amount)},
        gettext("Balance: %(amount)s") % {"amount": money(pledge, pledge.balance)},
    ]
    if pledge.due_date:
        # Translators: the due date's format, in Django's date format syntax.
        due = date_format(pledge.due_date, pgettext("pledge due date", "d M Y"))
        if pledge.is_overdue:
            lines.append(gettext("Due: %(date)s (overdue)") % {"date": due})
        else:
            days = pledge.days_remaining
            lines.append(
                ngettext("Due: %(date)s, %(days)d day remaining", "Due: %(date)s, %(days)d days remaining", days)
                % {"date": due, "days": days}
            )
    return "\n".join(lines)


def money(pledge: Pledge, value: Decimal) -> str:
    """Pledge.format in the notation of the member's language: "1,234.50 USD", "1 234,50 USD" in
    French. (Pledge.format stays language-blind: number_format costs 40 times more, too much for
    a broadcast's placeholders.)"""
    places = 0 if value == value.to_integral_value() else 2
    return f"{number_format(value, places, force_grouping=True)} {pledge.currency}"


def parse_amount(text: str) -> Decimal | None:
    """'250', '1,000', '99.50' -> Decimal; anything else (negative, zero, huge, words) -> None."""
    text = text.strip().removeprefix("$").strip()
    if not _AMOUNT.match(text):
        return None
    try:
        amount = Decimal(text.replace(",", ""))
    except InvalidOperation:
        return None
    return amount if Decimal("0") < amount < MAX_PLEDGE else None
