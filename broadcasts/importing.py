"""Pledges from a CSV file: one row per pledge, identified by (telegram id, campaign), so
importing the same file again changes nothing."""

import csv
import io
import re
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import TYPE_CHECKING, TextIO

from django.conf import settings
from django.db import transaction
from django.template.defaultfilters import pluralize

from bots.models import Bot, TelegramUser
from broadcasts.models import Pledge

if TYPE_CHECKING:
    import _csv

REQUIRED_COLUMNS = ("telegram_id", "amount", "paid_amount", "due_date")
OPTIONAL_COLUMNS = ("name", "currency", "campaign")
DELIMITERS = ",;\t"
MAX_AMOUNT = Decimal("1000000000000")  # Pledge.amount: 14 digits, 2 of them decimals
MAX_TELEGRAM_ID = 2**63 - 1
MAX_CAMPAIGN = Pledge._meta.get_field("campaign").max_length
NAME_NOTE = "name: "
UPDATED_FIELDS = ["amount", "paid_amount", "due_date", "currency", "member", "note"]

_NUMBER = re.compile(r"^\d+(\.\d+)?$")
_THOUSANDS = re.compile(r"^\d{1,3}(,\d{3})+(\.\d+)?$")
_DECIMAL_COMMA = re.compile(r"^\d+,\d{1,2}$")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_CURRENCY = re.compile(r"^[A-Z0-9]{1,8}$")


class RowError(ValueError):
    """A line of the file is wrong: that line is reported and, with skip_errors, skipped."""


class FileError(ValueError):
    """The file as a whole is wrong: nothing in it is imported."""

    def __init__(self, message: str, line: int = 1):
        super().__init__(message)
        self.line = line


@dataclass
class Row:
    """One valid line of the file."""

    line: int
    telegram_id: int
    amount: Decimal
    paid_amount: Decimal
    due_date: date | None
    currency: str
    campaign: str
    name: str

    @property
    def key(self) -> tuple[int, str]:
        return self.telegram_id, self.campaign


@dataclass
class RowOutcome:
    line: int
    telegram_id: int
    campaign: str
    action: str  # "created", "updated" or "unchanged"
    changes: list[str] = field(default_factory=list)


@dataclass
class ImportResult:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)
    rows: list[RowOutcome] = field(default_factory=list)
    dry_run: bool = False
    applied: bool = False  # whether anything was written to the database

    @property
    def valid_rows(self) -> int:
        return self.created + self.updated + self.unchanged

    def summary(self) -> str:
        counts = f"{self.created} created, {self.updated} updated, {self.unchanged} unchanged"
        n = len(self.errors)
        errors = f"{n} error{pluralize(n)}"
        if self.applied:
            skipped = f" Skipped {n} line{pluralize(n)} with errors." if n else ""
            return f"Imported: {counts}.{skipped}"
        if self.dry_run:
            return f"Dry run, nothing changed. The import would give: {counts}; {errors}."
        if self.errors:
            return f"Nothing imported: {errors}."
        return "Nothing imported: the file has no pledges."


def import_pledges(bot: Bot, file_obj: TextIO, dry_run: bool = False, skip_errors: bool = False) -> ImportResult:
    """Import a pledge CSV for one bot.

    1. Read the header (delimiter sniffed from it) and check the columns: any problem there stops everything.
    2. Parse and validate each row, collecting errors with their line numbers.
    3. Match rows to existing pledges by (telegram id, campaign) and attach members who exist.
    4. Write, in one transaction, unless this is a dry run or there were errors and not skip_errors.
    """
    result = ImportResult(dry_run=dry_run)
    try:
        rows = _parse(file_obj.read(), result.errors)
    except FileError as exc:
        result.errors.append((exc.line, str(exc)))
        return result
    with transaction.atomic():
        if not dry_run:
            Bot.objects.select_for_update().filter(pk=bot.pk).first()  # one import per bot at a time
        new, changed = _plan(bot, rows, result)
        if dry_run or (result.errors and not skip_errors) or not result.valid_rows:
            return result
        Pledge.objects.bulk_create(new, batch_size=500)
        Pledge.objects.bulk_update(changed, UPDATED_FIELDS, batch_size=500)
        result.applied = True
    return result


def decode(data: bytes) -> str:
    """An uploaded file's text; spreadsheets save CSV as UTF-8 (with or without a BOM)."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise FileError("The file is not UTF-8 text. Save it from your spreadsheet as “CSV UTF-8”.") from None


def _parse(text: str, errors: list[tuple[int, str]]) -> list[Row]:
    text = text.removeprefix("\ufeff")
    if "\x00" in text:
        raise FileError("This is not a CSV file: it contains binary data.")
    if not text.strip():
        raise FileError("The file is empty.")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_sniff_delimiter(text))
    try:
        return _parse_rows(reader, errors)
    except csv.Error as exc:
        raise FileError(f"This is not a readable CSV file: {exc}.", reader.line_num) from None


def _parse_rows(reader: "_csv.Reader", errors: list[tuple[int, str]]) -> list[Row]:
    """Valid rows; each bad one goes into errors under the line it starts on. Blank lines are skipped."""
    rows: list[Row] = []
    seen: dict[tuple[int, str], int] = {}
    columns: list[str] | None = None
    line = 0
    for values in reader:
        start, line = line + 1, reader.line_num
        if not any(value.strip() for value in values):
            continue
        if columns is None:
            columns = _columns(values, start)
            continue
        try:
            row = _row(start, columns, values)
            _check_unique(row, seen)
        except RowError as exc:
            errors.append((start, str(exc)))
        else:
            rows.append(row)
    return rows


def _sniff_delimiter(text: str) -> str:
    """The delimiter used most in the header line. csv.Sniffer guesses from the data rows too and
    is thrown by commas in names and amounts; the header has only column names."""
    header = text.strip().splitlines()[0]
    return max(DELIMITERS, key=header.count)


def _columns(header: list[str], line: int) -> list[str]:
    columns = [name.strip().lower() for name in header]
    while columns and not columns[-1]:
        columns.pop()  # spreadsheets pad the header with empty cells
    known = set(REQUIRED_COLUMNS) | set(OPTIONAL_COLUMNS)
    if not known & set(columns):
        raise FileError(
            "This does not look like a pledge CSV: the first line must be a header naming the columns "
            f"{', '.join(REQUIRED_COLUMNS)} (and optionally {', '.join(OPTIONAL_COLUMNS)}).",
            line,
        )
    if "" in columns:
        raise FileError(f"Column {columns.index('') + 1} has no name.", line)
    unknown = [name for name in columns if name not in known]
    if unknown:
        allowed = ", ".join(REQUIRED_COLUMNS + OPTIONAL_COLUMNS)
        raise FileError(f"Unknown column{pluralize(unknown)}: {', '.join(unknown)}. The columns are {allowed}.", line)
    missing = [name for name in REQUIRED_COLUMNS if name not in columns]
    if missing:
        raise FileError(f"Missing required column{pluralize(missing)}: {', '.join(missing)}.", line)
    repeated = sorted({name for name in columns if columns.count(name) > 1})
    if repeated:
        raise FileError(f"Column{pluralize(repeated)} named twice: {', '.join(repeated)}.", line)
    return columns


def _row(line: int, columns: list[str], values: list[str]) -> Row:
    if len(values) > len(columns) and not any(value.strip() for value in values[len(columns) :]):
        values = values[: len(columns)]  # spreadsheets pad rows with empty cells
    if len(values) != len(columns):
        raise RowError(f"expected {len(columns)} fields, found {len(values)}")
    cells = {name: value.strip() for name, value in zip(columns, values, strict=True)}
    amount = _amount(cells["amount"], "amount", required=True)
    paid_amount = _amount(cells["paid_amount"], "paid_amount", required=False)
    if paid_amount > amount:
        raise RowError(f"paid_amount exceeds amount ({paid_amount} > {amount})")
    return Row(
        line=line,
        telegram_id=_telegram_id(cells["telegram_id"]),
        amount=amount,
        paid_amount=paid_amount,
        due_date=_due_date(cells["due_date"]),
        currency=_currency(cells.get("currency", "")),
        campaign=_campaign(cells.get("campaign", "")),
        name=cells.get("name", ""),
    )


def _telegram_id(text: str) -> int:
    if not text:
        raise RowError("telegram_id is empty")
    if not text.isascii() or not text.isdigit():
        raise RowError(f"telegram_id {text!r} is not a number")
    value = int(text)
    if not 0 < value <= MAX_TELEGRAM_ID:
        raise RowError(f"telegram_id {text!r} is out of range")
    return value


def _amount(text: str, column: str, required: bool) -> Decimal:
    """'1250', '1,250.50' and, from spreadsheets that use a decimal comma, '1250,50'."""
    if not text:
        if required:
            raise RowError(f"{column} is empty")
        return Decimal("0")
    number = text.removeprefix("-").strip()
    if _DECIMAL_COMMA.match(number):
        number = number.replace(",", ".")
    elif _THOUSANDS.match(number):
        number = number.replace(",", "")
    if not _NUMBER.match(number):
        raise RowError(f"{column} {text!r} is not a number")
    value = Decimal(number)
    if text.startswith("-") and value:
        raise RowError(f"{column} must not be negative ({text})")
    if value != value.quantize(Decimal("0.01")):
        raise RowError(f"{column} {text!r} has more than 2 decimal places")
    if value >= MAX_AMOUNT:
        raise RowError(f"{column} {text!r} is too large")
    return value


def _due_date(text: str) -> date | None:
    if not text:
        return None
    try:
        if _ISO_DATE.match(text):
            return date.fromisoformat(text)
    except ValueError:
        pass
    raise RowError(f"due_date {text!r} is not a date (YYYY-MM-DD)")


def _currency(text: str) -> str:
    if not text:
        return settings.PLEDGE_DEFAULT_CURRENCY
    if not _CURRENCY.match(text.upper()):
        raise RowError(f"currency {text!r} is not a currency code like USD")
    return text.upper()


def _campaign(text: str) -> str:
    if len(text) > MAX_CAMPAIGN:
        raise RowError(f"campaign is longer than {MAX_CAMPAIGN} characters")
    return text


def _check_unique(row: Row, seen: dict[tuple[int, str], int]) -> None:
    if row.key in seen:
        campaign = f"campaign {row.campaign!r}" if row.campaign else "no campaign"
        raise RowError(f"telegram_id {row.telegram_id} with {campaign} is already on line {seen[row.key]}")
    seen[row.key] = row.line


def _plan(bot: Bot, rows: list[Row], result: ImportResult) -> tuple[list[Pledge], list[Pledge]]:
    """The pledges to create and those to update; counts and outcomes go into result."""
    ids = {row.telegram_id for row in rows}
    members = {m.telegram_id: m for m in TelegramUser.objects.filter(bot=bot, telegram_id__in=ids)}
    existing = _existing(bot, ids)
    new: list[Pledge] = []
    changed: list[Pledge] = []
    for row in rows:
        matches = existing.get(row.key, [])
        if len(matches) > 1:
            result.errors.append((row.line, _ambiguous(row, len(matches))))
            continue
        pledge = matches[0] if matches else Pledge(bot=bot, telegram_id=row.telegram_id, campaign=row.campaign)
        changes = _apply(row, pledge, members.get(row.telegram_id))
        if not matches:
            new.append(pledge)
            result.created += 1
            result.rows.append(RowOutcome(row.line, row.telegram_id, row.campaign, "created"))
        elif changes:
            changed.append(pledge)
            result.updated += 1
            result.rows.append(RowOutcome(row.line, row.telegram_id, row.campaign, "updated", changes))
        else:
            result.unchanged += 1
            result.rows.append(RowOutcome(row.line, row.telegram_id, row.campaign, "unchanged"))
    result.errors.sort()
    return new, changed


def _existing(bot: Bot, ids: set[int]) -> dict[tuple[int, str], list[Pledge]]:
    found: dict[tuple[int, str], list[Pledge]] = {}
    for pledge in Pledge.objects.filter(bot=bot, telegram_id__in=ids).order_by("pk"):
        found.setdefault((pledge.telegram_id, pledge.campaign), []).append(pledge)
    return found


def _ambiguous(row: Row, count: int) -> str:
    campaign = f"campaign {row.campaign!r}" if row.campaign else "no campaign"
    return (
        f"telegram_id {row.telegram_id} already has {count} pledges with {campaign}; "
        "give this row a campaign or merge them in the admin"
    )


def _apply(row: Row, pledge: Pledge, member: TelegramUser | None) -> list[str]:
    """Copy the row onto the pledge; the names of the fields that changed.

    The name goes into the note only for someone who has not pressed /start (their member row
    carries the name otherwise) and only into an empty note, so an operator's note is never lost."""
    changes = []
    for name in ("amount", "paid_amount", "due_date", "currency"):
        if getattr(pledge, name) != getattr(row, name):
            setattr(pledge, name, getattr(row, name))
            changes.append(name)
    if member is not None and pledge.member_id is None:
        pledge.member = member
        changes.append("member")
    if row.name and pledge.member_id is None and not pledge.note:
        pledge.note = f"{NAME_NOTE}{row.name}"
        changes.append("note")
    return changes
