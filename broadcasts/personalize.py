"""Placeholders in broadcast text: `#name`, `#balance`, ... replaced by one member's values,
escaped for the parse mode so that a member's name can never break or inject markup."""

import html
import re
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal
from difflib import get_close_matches

from telegram.helpers import escape_markdown

from bots.models import TelegramUser
from broadcasts.models import ParseMode, Pledge

PLACEHOLDERS: dict[str, str] = {
    "name": "Full name (first and last); the username, or “friend”, when Telegram has no name",
    "first_name": "First name; like #name when it is empty",
    "username": "@username, or nothing when the member has none",
    "pledge": "Pledged amount, e.g. 1,250 USD (all the member's pledges added up)",
    "paid_amount": "Amount paid so far",
    "balance": "Amount still to pay",
    "days_remain": "Days until the earliest due date of an unpaid pledge (0 when overdue)",
    "due_date": "Earliest due date of an unpaid pledge, e.g. 05 Mar 2026",
    "campaign": "The pledges' campaigns, separated by commas",
}
PLEDGE_PLACEHOLDERS = frozenset({"pledge", "paid_amount", "balance", "days_remain", "due_date", "campaign"})

MAX_TEXT = 4096
MAX_CAPTION = 1024
# The longest value of each placeholder, in UTF-16 units, but #campaign's (a member's campaigns,
# however many): names as cut to their columns (128 characters, each up to 2 units), amounts
# summed from Pledge.amount's 14 digits, days to the year 9999.
LONGEST_VALUES = {
    "name": 514,
    "first_name": 514,
    "username": 65,
    "pledge": 40,
    "paid_amount": 40,
    "balance": 40,
    "days_remain": 8,
    "due_date": 11,
}

# A tag is the whole run of word characters after "#": "#pledges" is the tag "pledges".
_TAG = re.compile(r"#(\w+)")
_HTML_TAG = re.compile(r"<[^>]*>")
# difflib's similarity from which a hashtag is taken for a misspelt placeholder: #balnce and
# #Name are (0.92, 1.0), #news and #bal are not (0.6 at most).
_NEAR_MISS = 0.7


def render(text: str, member: TelegramUser, pledges: Sequence[Pledge], parse_mode: str, fallback: str = "-") -> str:
    """The text with every placeholder replaced by this member's value, escaped for parse_mode;
    any other hashtag is left exactly as written."""
    values = _values(member, list(pledges), fallback)
    escape = _escaper(parse_mode)

    def replace(match: re.Match) -> str:
        tag = match.group(1)
        return escape(values[tag]) if tag in values else match.group(0)

    return _TAG.sub(replace, text)


def unknown_hashtags(text: str) -> list[str]:
    """Hashtags that look like misspelt placeholders (#balnce, #pledge_amount, #Name), in order,
    each once. Hashtags far from every placeholder (#news) are ordinary text and not listed."""
    found: dict[str, None] = {}
    for tag in _TAG.findall(text):
        if tag not in PLACEHOLDERS and _looks_like_a_placeholder(tag):
            found[f"#{tag}"] = None
    return list(found)


def needs_pledge(text: str) -> bool:
    return any(tag in PLEDGE_PLACEHOLDERS for tag in _TAG.findall(text))


def too_long(rendered: str, is_caption: bool, parse_mode: str = "") -> bool:
    limit = MAX_CAPTION if is_caption else MAX_TEXT
    return visible_length(rendered, parse_mode) > limit


def longest_visible_length(text: str, parse_mode: str, fallback: str) -> int | None:
    """No member's `render(text)` is visibly longer than this; None when #campaign leaves it
    unbounded. Lets a preview skip rendering every recipient for a text that cannot be too long."""
    tags = [tag for tag in _TAG.findall(text) if tag in PLACEHOLDERS]
    if "campaign" in tags:
        return None
    fallback_length = visible_length(fallback)
    longest = sum(
        max(LONGEST_VALUES[tag], fallback_length) if tag in PLEDGE_PLACEHOLDERS else LONGEST_VALUES[tag] for tag in tags
    )
    return visible_length(text, parse_mode) + longest


def visible_length(rendered: str, parse_mode: str = "") -> int:
    """The length Telegram checks: UTF-16 code units of the text after entity parsing, without
    the whitespace Telegram trims. For HTML and MarkdownV2 this is approximated by stripping the
    markup (tags and entities; markers, escapes and link URLs); a code block's language name
    still counts, so the estimate errs on the long side."""
    text = _strip_markup(rendered, parse_mode).strip()
    return len(text.encode("utf-16-le")) // 2


def _values(member: TelegramUser, pledges: list[Pledge], fallback: str) -> dict[str, str]:
    name = member.full_name or member.username or "friend"
    values = {
        "name": name,
        "first_name": member.first_name or name,
        "username": f"@{member.username}" if member.username else "",
    }
    return values | _pledge_values(pledges, fallback)


def _pledge_values(pledges: list[Pledge], fallback: str) -> dict[str, str]:
    if not pledges:
        return dict.fromkeys(PLEDGE_PLACEHOLDERS, fallback)
    first = pledges[0]
    next_due = _next_due(pledges)
    campaigns = dict.fromkeys(p.campaign for p in pledges if p.campaign)
    return {
        "pledge": first.format(_total(p.amount for p in pledges)),
        "paid_amount": first.format(_total(p.paid_amount for p in pledges)),
        "balance": first.format(_total(p.balance for p in pledges)),
        "days_remain": str(next_due.days_remaining) if next_due else fallback,
        "due_date": f"{next_due.due_date:%d %b %Y}" if next_due else fallback,
        "campaign": ", ".join(campaigns) or fallback,
    }


def _next_due(pledges: list[Pledge]) -> Pledge | None:
    unpaid = [p for p in pledges if p.due_date and p.balance > 0]
    return min(unpaid, key=lambda p: p.due_date) if unpaid else None


def _total(values: Iterable[Decimal]) -> Decimal:
    return sum(values, Decimal("0"))


def _escaper(parse_mode: str) -> Callable[[str], str]:
    if parse_mode == ParseMode.HTML:
        # Quotes too: a value may land inside an attribute (<a href="...?who=#username">).
        return lambda value: html.escape(value, quote=True)
    if parse_mode == ParseMode.MARKDOWN_V2:
        return lambda value: escape_markdown(value, version=2)
    if not parse_mode:
        return lambda value: value
    raise ValueError(f"Unknown parse mode {parse_mode!r}")


def _looks_like_a_placeholder(tag: str) -> bool:
    tag = tag.lower()
    return any(tag.startswith(name) for name in PLACEHOLDERS) or bool(
        get_close_matches(tag, PLACEHOLDERS, n=1, cutoff=_NEAR_MISS)
    )


def _strip_markup(text: str, parse_mode: str) -> str:
    if parse_mode == ParseMode.HTML:
        return html.unescape(_HTML_TAG.sub("", text))
    if parse_mode == ParseMode.MARKDOWN_V2:
        return _strip_markdown_v2(text)
    return text


def _strip_markdown_v2(text: str) -> str:
    """Escaped characters count once; markers (* _ ~ | ` [ ] >) not at all; the (url) of a link
    or custom emoji not at all."""
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
        elif char == "]" and text.startswith("(", i + 1):
            i = _after_closing_paren(text, i + 2)
        elif char in "*_~|`[]>":
            i += 1
        else:
            out.append(char)
            i += 1
    return "".join(out)


def _after_closing_paren(text: str, i: int) -> int:
    while i < len(text) and text[i] != ")":
        i += 2 if text[i] == "\\" else 1
    return i + 1
