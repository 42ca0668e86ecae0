"""/pledge: the member's pledges, or a new one recorded (/pledge 250). Registered with
bots.handlers in BroadcastsConfig.ready(), since bots does not import broadcasts."""

import re
from decimal import Decimal, InvalidOperation

from bots.handlers import Context
from broadcasts.models import Pledge

MAX_PLEDGE = Decimal("1000000000")
_AMOUNT = re.compile(r"^(\d{1,3}(,\d{3})+|\d+)(\.\d{1,2})?$")


def pledge(context: Context, argument: str) -> None:
    if argument:
        amount = parse_amount(argument)
        if amount is None:
            context.reply(f"I couldn't read “{argument[:40]}” as an amount. Send a number, for example /pledge 250.")
            return
        new = Pledge.objects.create(
            bot=context.bot, member=context.member, telegram_id=context.member.telegram_id, amount=amount
        )
        context.reply(f"Thank you! I recorded your pledge of {new.format(new.amount)}.")
        return
    pledges = list(context.member.pledges.order_by("created_at"))
    if not pledges:
        context.reply("You have no pledge yet. Send /pledge 250 to pledge 250.")
        return
    context.reply("\n\n".join(describe_pledge(p) for p in pledges))


def describe_pledge(pledge: Pledge) -> str:
    lines = [
        f"Pledge: {pledge.format(pledge.amount)}" + (f" ({pledge.campaign})" if pledge.campaign else ""),
        f"Paid: {pledge.format(pledge.paid_amount)}",
        f"Balance: {pledge.format(pledge.balance)}",
    ]
    if pledge.due_date:
        overdue = " (overdue)" if pledge.is_overdue else ""
        lines.append(f"Due: {pledge.due_date:%d %b %Y}, {pledge.days_remaining} days remaining{overdue}")
    return "\n".join(lines)


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
