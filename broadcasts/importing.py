"""Pledges from a CSV file: one row per pledge, identified by (telegram id, campaign), so
importing the same file again changes nothing."""

import csv
import io
import itertools
import re
import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection, connections, models, transaction
from django.template.defaultfilters import pluralize
from django.utils import timezone

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
MAX_NAME = Pledge._meta.get_field("name").max_length
COPIED_FIELDS = ["amount", "paid_amount", "due_date", "currency", "name"]
UPDATED_FIELDS = [*COPIED_FIELDS, "member"]
BATCH_SIZE = 1000
# Columns whose Python values (int, str, None) every database driver takes as they are.
PLAIN_FIELDS = (models.IntegerField, models.CharField, models.TextField, models.ForeignKey)
SAMPLE_SIZE = 50
BINARY_PROBE = 8192
MAX_CONTENT = 300  # characters of an offending line shown with its error
KEEP_UPLOADS_FOR = timedelta(days=1)
NOT_UTF8 = "The file is not UTF-8 text. Save it from your spreadsheet as “CSV UTF-8”."

_NUMBER = re.compile(r"^\d+(\.\d+)?$")
_THOUSANDS = re.compile(r"^\d{1,3}(,\d{3})+(\.\d+)?$")
_DECIMAL_COMMA = re.compile(r"^\d+,\d{1,2}$")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_CURRENCY = re.compile(r"^[A-Z0-9]{1,8}$")
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{32}$")


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
    content: str  # the line's cells as the file has them, for an error found later

    @property
    def key(self) -> tuple[int, str]:
        return self.telegram_id, self.campaign


@dataclass
class RowOutcome:
    line: int
    telegram_id: int
    campaign: str
    name: str
    action: str  # "created", "updated" or "unchanged"
    changes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class LineError:
    line: int
    reason: str
    content: str = ""  # the offending line's cells, as the file has them


ACTIONS = ("created", "updated", "unchanged")


@dataclass
class ImportResult:
    """Counts of every kind, and the first `sample_size` rows and errors (all when None): a
    100,000-row file is summarised, not listed."""

    sample_size: int | None = SAMPLE_SIZE
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    error_count: int = 0
    errors: list[LineError] = field(default_factory=list)
    samples: dict[str, list[RowOutcome]] = field(default_factory=lambda: {action: [] for action in ACTIONS})
    dry_run: bool = False
    applied: bool = False  # whether anything was written to the database

    @property
    def valid_rows(self) -> int:
        return self.created + self.updated + self.unchanged

    @property
    def rows(self) -> list[RowOutcome]:
        """The sampled rows in file order."""
        return sorted((row for rows in self.samples.values() for row in rows), key=lambda row: row.line)

    def add(self, outcome: RowOutcome) -> None:
        setattr(self, outcome.action, getattr(self, outcome.action) + 1)
        self._keep(self.samples[outcome.action], outcome)

    def add_error(self, error: LineError) -> None:
        self.error_count += 1
        self._keep(self.errors, error)

    def _keep(self, sample: list, item) -> None:
        if self.sample_size is None or len(sample) < self.sample_size:
            sample.append(item)

    def summary(self) -> str:
        counts = f"{self.created} created, {self.updated} updated, {self.unchanged} unchanged"
        n = self.error_count
        errors = f"{n} error{pluralize(n)}"
        if self.applied:
            skipped = f" Skipped {n} line{pluralize(n)} with errors." if n else ""
            return f"Imported: {counts}.{skipped}"
        if self.dry_run:
            return f"Dry run, nothing changed. The import would give: {counts}; {errors}."
        if self.error_count:
            return f"Nothing imported: {errors}."
        return "Nothing imported: the file has no pledges."


Progress = Callable[[int], None]  # called with the number of lines read so far


def import_pledges(
    bot: Bot,
    file_obj: TextIO,
    dry_run: bool = False,
    skip_errors: bool = False,
    sample_size: int | None = SAMPLE_SIZE,
    progress: Progress | None = None,
) -> ImportResult:
    """Import a pledge CSV for one bot, streaming it in batches of BATCH_SIZE rows.

    1. Read the header (delimiter sniffed from it) and check the columns: any problem there stops everything.
    2. Parse and validate each row of a batch, noting errors with their line and content.
    3. Match the batch to existing pledges by (telegram id, campaign) and attach members who exist.
    4. Write the batch (one INSERT and one UPDATE, each an executemany), unless this is a dry run.
    5. All batches share one transaction, rolled back at the end if there were errors and not
       skip_errors: a file with errors changes nothing.
    """
    result = ImportResult(sample_size=sample_size, dry_run=dry_run)
    try:
        with transaction.atomic():
            if not dry_run:
                Bot.objects.select_for_update().filter(pk=bot.pk).first()  # one import per bot at a time
            for batch, line in _batches(file_obj, result):
                new, changed = _plan(bot, batch, result)
                if not dry_run:
                    _insert(new)
                    _update(changed)
                if progress:
                    progress(line)
            result.applied = not dry_run and result.valid_rows > 0 and (skip_errors or not result.error_count)
            if not result.applied:
                transaction.set_rollback(True)
    except FileError as exc:
        result.applied = False
        result.add_error(LineError(exc.line, str(exc)))
    result.errors.sort(key=lambda error: error.line)  # a batch's ambiguous rows are found after its bad lines
    return result


def keep_upload(chunks: Iterable[bytes]) -> str:
    """Store an uploaded file until it is imported (or for KEEP_UPLOADS_FOR); its token."""
    folder = _uploads_folder()
    folder.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(24)
    with (folder / f"{token}.csv").open("xb") as file:
        for chunk in chunks:
            file.write(chunk)
    return token


def kept_upload(token: str) -> Path | None:
    """The kept file of this token, or None when there is none (imported, expired, or a made-up token)."""
    path = _uploads_folder() / f"{token}.csv"
    return path if _TOKEN.match(token) and path.is_file() else None


def discard_upload(token: str) -> None:
    if path := kept_upload(token):
        path.unlink(missing_ok=True)


def discard_stale_uploads() -> None:
    if not _uploads_folder().is_dir():
        return
    cutoff = time.time() - KEEP_UPLOADS_FOR.total_seconds()
    for path in _uploads_folder().glob("*.csv"):
        if path.stat().st_mtime < cutoff:
            path.unlink(missing_ok=True)


def _uploads_folder() -> Path:
    return Path(settings.VAR_DIR) / "pledge-imports"


def count_lines(path: Path) -> int:
    """Lines in a file, for a progress bar (a quoted cell over several lines counts each)."""
    with path.open("rb") as file:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: file.read(1 << 20), b""))


def _batches(file_obj: TextIO, result: ImportResult) -> Iterator[tuple[list["Row"], int]]:
    """Valid rows in batches, each with the last line it read; errors go into result."""
    try:
        lines = _lines(file_obj)
        head = _up_to_header(lines)
        reader = csv.reader(itertools.chain(head, lines), delimiter=_sniff_delimiter(head[-1]))
        yield from _parse_rows(reader, result)
    except csv.Error as exc:
        raise FileError(f"This is not a readable CSV file: {exc}.", reader.line_num) from None
    except UnicodeDecodeError:
        raise FileError(NOT_UTF8) from None


def _lines(file_obj: TextIO) -> Iterator[str]:
    """The file's lines. A NUL in the first few kilobytes is a binary file (a spreadsheet, a PDF)."""
    start = file_obj.read(BINARY_PROBE)
    if "\x00" in start:
        raise FileError("This is not a CSV file: it contains binary data.")
    start = start.removeprefix("\ufeff") + file_obj.readline()
    return itertools.chain(io.StringIO(start, newline=""), file_obj)


def _up_to_header(lines: Iterator[str]) -> list[str]:
    """The blank lines before the header, and the header line."""
    head = []
    for line in lines:
        head.append(line)
        if line.strip():
            return head
    raise FileError("The file is empty.")


def _parse_rows(reader: "_csv.Reader", result: ImportResult) -> Iterator[tuple[list["Row"], int]]:
    """Blank lines are skipped; a bad row is reported under the line it starts on."""
    batch: list[Row] = []
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
        content = reader.dialect.delimiter.join(values)[:MAX_CONTENT]
        try:
            row = _row(start, columns, values, content)
            _check_unique(row, seen)
        except RowError as exc:
            result.add_error(LineError(start, str(exc), content))
        else:
            batch.append(row)
        if len(batch) == BATCH_SIZE:
            yield batch, line
            batch = []
    if batch or line:
        yield batch, line


def _sniff_delimiter(header: str) -> str:
    """The delimiter used most in the header line. csv.Sniffer guesses from the data rows too and
    is thrown by commas in names and amounts; the header has only column names."""
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


def _row(line: int, columns: list[str], values: list[str], content: str) -> Row:
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
        name=_name(cells.get("name", "")),
        content=content,
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


def _name(text: str) -> str:
    if len(text) > MAX_NAME:
        raise RowError(f"name is longer than {MAX_NAME} characters")
    return text


def _check_unique(row: Row, seen: dict[tuple[int, str], int]) -> None:
    if row.key in seen:
        campaign = f"campaign {row.campaign!r}" if row.campaign else "no campaign"
        raise RowError(f"telegram_id {row.telegram_id} with {campaign} is already on line {seen[row.key]}")
    seen[row.key] = row.line


PledgeValues = dict[str, object]  # a pledge's columns by attribute name: plain values, no model instance


def _plan(bot: Bot, rows: list[Row], result: ImportResult) -> tuple[list[PledgeValues], list[PledgeValues]]:
    """The pledges of one batch to create and those to update; counts and samples go into result."""
    ids = {row.telegram_id for row in rows}
    members = dict(TelegramUser.objects.filter(bot=bot, telegram_id__in=ids).values_list("telegram_id", "pk"))
    existing = _existing(bot, ids)
    new: list[PledgeValues] = []
    changed: list[PledgeValues] = []
    now = timezone.now()
    for row in rows:
        matches = existing.get(row.key, [])
        if len(matches) > 1:
            result.add_error(LineError(row.line, _ambiguous(row, len(matches)), row.content))
            continue
        if matches:
            pledge = matches[0]
            changes = _apply(row, pledge, members.get(row.telegram_id))
            if changes:
                changed.append(pledge)
            action = "updated" if changes else "unchanged"
        else:
            new.append(_new(bot, row, members.get(row.telegram_id), now))
            action, changes = "created", []
        result.add(RowOutcome(row.line, row.telegram_id, row.campaign, row.name, action, changes))
    return new, changed


def _new(bot: Bot, row: Row, member_id: int | None, now: datetime) -> PledgeValues:
    fields = {name: getattr(row, name) for name in COPIED_FIELDS}
    return {
        **fields,
        "bot_id": bot.pk,
        "member_id": member_id,
        "telegram_id": row.telegram_id,
        "campaign": row.campaign,
        "note": "",
        "created_at": now,
    }


def _insert(pledges: list[PledgeValues]) -> None:
    """One executemany: bulk_create on SQLite sends 90 rows per INSERT, each compiled anew."""
    fields = [f for f in Pledge._meta.concrete_fields if not f.primary_key]
    placeholders = ", ".join(["%s"] * len(fields))
    _executemany(f"INSERT INTO {_table()} ({_columns_sql(fields, '')}) VALUES ({placeholders})", fields, pledges)


def _update(pledges: list[PledgeValues]) -> None:
    """One executemany: bulk_update builds a CASE per field per row, seconds per thousand rows on SQLite."""
    fields = [Pledge._meta.get_field(name) for name in UPDATED_FIELDS]
    sql = f"UPDATE {_table()} SET {_columns_sql(fields, ' = %s')} WHERE id = %s"
    _executemany(sql, [*fields, Pledge._meta.pk], pledges)


def _executemany(sql: str, fields: list, pledges: list[PledgeValues]) -> None:
    if not pledges:
        return
    database = connections[DEFAULT_DB_ALIAS]  # the proxy `connection` costs a lookup per value
    adapted = [(f.attname, None if isinstance(f, PLAIN_FIELDS) else f) for f in fields]
    rows = [
        [p[name] if field is None else field.get_db_prep_save(p[name], database) for name, field in adapted]
        for p in pledges
    ]
    with database.cursor() as cursor:
        cursor.executemany(sql, rows)


def _table() -> str:
    return connection.ops.quote_name(Pledge._meta.db_table)


def _columns_sql(fields: list, suffix: str) -> str:
    return ", ".join(f"{connection.ops.quote_name(f.column)}{suffix}" for f in fields)


def _existing(bot: Bot, ids: set[int]) -> dict[tuple[int, str], list[PledgeValues]]:
    found: dict[tuple[int, str], list[PledgeValues]] = {}
    columns = ["id", "telegram_id", "campaign", *(f.attname for f in map(Pledge._meta.get_field, UPDATED_FIELDS))]
    for pledge in Pledge.objects.filter(bot=bot, telegram_id__in=ids).order_by("pk").values(*columns):
        found.setdefault((pledge["telegram_id"], pledge["campaign"]), []).append(pledge)
    return found


def _ambiguous(row: Row, count: int) -> str:
    campaign = f"campaign {row.campaign!r}" if row.campaign else "no campaign"
    return (
        f"telegram_id {row.telegram_id} already has {count} pledges with {campaign}; "
        "give this row a campaign or merge them in the admin"
    )


def _apply(row: Row, pledge: PledgeValues, member_id: int | None) -> list[str]:
    """Copy the row onto the pledge; the names of the fields that changed. An empty name in the
    file keeps the name the pledge has."""
    copied = COPIED_FIELDS if row.name else [name for name in COPIED_FIELDS if name != "name"]
    changes = [name for name in copied if pledge[name] != getattr(row, name)]
    for name in changes:
        pledge[name] = getattr(row, name)
    if member_id is not None and pledge["member_id"] is None:
        pledge["member_id"] = member_id
        changes.append("member")
    return changes
