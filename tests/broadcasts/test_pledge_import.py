"""Pledges come in from a CSV file: every row checked, errors reported by line, nothing
half-imported, and importing again never duplicates."""

import io
import os
import pty
import time
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import Permission, User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from bots.models import Bot, TelegramUser
from broadcasts.importing import import_pledges
from broadcasts.models import Pledge

HEADER = "telegram_id,amount,paid_amount,due_date,name,currency,campaign\n"
GOOD = HEADER + "42,1250,250,2030-03-01,Ann Lee,USD,Roof\n43,99.50,0,,Bob,,\n"


@pytest.fixture
def bot(db):
    return Bot.objects.create(token="123456:AAE-secret")


def run(bot, text, dry_run=False, skip_errors=False):
    return import_pledges(bot, io.StringIO(text), dry_run=dry_run, skip_errors=skip_errors)


def problems(result):
    return [(error.line, error.reason) for error in result.errors]


def pledges():
    return sorted(
        Pledge.objects.values_list("telegram_id", "amount", "paid_amount", "due_date", "currency", "campaign"),
        key=lambda p: (p[0], p[5]),
    )


GOOD_PLEDGES = [
    (42, Decimal("1250"), Decimal("250"), date(2030, 3, 1), "USD", "Roof"),
    (43, Decimal("99.50"), Decimal("0"), None, "USD", ""),
]


def test_a_good_file_creates_its_pledges(bot):
    result = run(bot, GOOD)

    assert (result.created, result.updated, result.unchanged, problems(result)) == (2, 0, 0, [])
    assert result.applied
    assert pledges() == GOOD_PLEDGES
    assert set(Pledge.objects.values_list("bot", flat=True)) == {bot.pk}


def test_only_the_required_columns_are_needed_and_currency_defaults(bot, settings):
    result = run(bot, "telegram_id,amount,paid_amount,due_date\n42,10,5,2030-01-01\n")

    assert result.created == 1
    pledge = Pledge.objects.get()
    assert (pledge.currency, pledge.campaign, pledge.note) == (settings.PLEDGE_DEFAULT_CURRENCY, "", "")


def test_header_names_are_case_insensitive_and_trimmed_in_any_order(bot):
    result = run(bot, " Campaign ,DUE_DATE, Paid_Amount ,AMOUNT,Telegram_ID \nRoof,2030-03-01,250,1250,42\n")

    assert problems(result) == []
    assert pledges() == [GOOD_PLEDGES[0]]


def test_an_unknown_column_is_an_error_and_nothing_is_imported(bot):
    result = run(bot, "telegram_id,amount,paid_amount,due_date,colour\n42,1,0,\n")

    assert problems(result) == [
        (
            1,
            "Unknown column: colour. The columns are "
            "telegram_id, amount, paid_amount, due_date, name, currency, campaign.",
        )
    ]
    assert not result.applied
    assert Pledge.objects.count() == 0


@pytest.mark.parametrize("missing", ["telegram_id", "amount", "paid_amount", "due_date"])
def test_a_missing_required_column_is_named(bot, missing):
    columns = [c for c in ("telegram_id", "amount", "paid_amount", "due_date") if c != missing]

    result = run(bot, ",".join(columns) + "\n" + ",".join("1" for _ in columns) + "\n", skip_errors=True)

    assert problems(result) == [(1, f"Missing required column: {missing}.")]
    assert Pledge.objects.count() == 0


def test_a_column_named_twice_is_an_error(bot):
    result = run(bot, "telegram_id,amount,paid_amount,due_date,Amount\n42,1,0,,2\n")

    assert problems(result) == [(1, "Column named twice: amount.")]


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ("abc,10,0,2030-01-01", "telegram_id 'abc' is not a number"),
        ("-42,10,0,2030-01-01", "telegram_id '-42' is not a number"),
        ("4.2,10,0,2030-01-01", "telegram_id '4.2' is not a number"),
        (",10,0,2030-01-01", "telegram_id is empty"),
        ("0,10,0,2030-01-01", "telegram_id '0' is out of range"),
        ("99999999999999999999,10,0,", "telegram_id '99999999999999999999' is out of range"),
        ("42,ten,0,2030-01-01", "amount 'ten' is not a number"),
        ("42,,0,2030-01-01", "amount is empty"),
        ("42,1e3,0,2030-01-01", "amount '1e3' is not a number"),
        ("42,NaN,0,", "amount 'NaN' is not a number"),
        ("42,-10,0,2030-01-01", "amount must not be negative (-10)"),
        ("42,10,-1,2030-01-01", "paid_amount must not be negative (-1)"),
        ("42,10,x,2030-01-01", "paid_amount 'x' is not a number"),
        ("42,10.005,0,", "amount '10.005' has more than 2 decimal places"),
        ("42,1000000000000,0,", "amount '1000000000000' is too large"),
        ("42,10,10.01,2030-01-01", "paid_amount exceeds amount (10.01 > 10)"),
        ("42,10,0,01/03/2030", "due_date '01/03/2030' is not a date (YYYY-MM-DD)"),
        ("42,10,0,2030-02-30", "due_date '2030-02-30' is not a date (YYYY-MM-DD)"),
        ("42,10,0,20300101", "due_date '20300101' is not a date (YYYY-MM-DD)"),
        ("42,10,0", "expected 4 fields, found 3"),
        ("42,10,0,2030-01-01,extra", "expected 4 fields, found 5"),
    ],
)
def test_a_bad_row_is_reported_with_its_line_and_reason(bot, row, reason):
    text = "telegram_id,amount,paid_amount,due_date\n1,5,0,2030-01-01\n" + row + "\n"

    result = run(bot, text)

    assert problems(result) == [(3, reason)]
    assert not result.applied
    assert Pledge.objects.count() == 0


def test_bad_currency_and_campaign_are_reported(bot):
    text = HEADER + "42,1,0,,,US Dollar,\n43,1,0,,,,{}\n".format("x" * 101)

    result = run(bot, text)

    assert problems(result) == [
        (2, "currency 'US Dollar' is not a currency code like USD"),
        (3, "campaign is longer than 100 characters"),
    ]


def test_paying_exactly_the_amount_and_a_lower_case_currency_are_fine(bot):
    result = run(bot, HEADER + "42,10,10,,,eur,\n")

    assert problems(result) == []
    assert Pledge.objects.get().currency == "EUR"


def test_amounts_with_thousands_separators_or_a_decimal_comma(bot):
    text = 'telegram_id;amount;paid_amount;due_date;campaign\n1;"1,250.50";0;;a\n2;1250,5;1,25;;b\n3;1.250;0;;c\n'

    result = run(bot, text)

    assert problems(result) == []
    amounts = dict(Pledge.objects.values_list("campaign", "amount"))
    assert amounts == {"a": Decimal("1250.50"), "b": Decimal("1250.50"), "c": Decimal("1.25")}
    assert Pledge.objects.get(campaign="b").paid_amount == Decimal("1.25")


def test_every_error_is_listed_in_line_order_and_nothing_is_imported(bot):
    text = HEADER + "42,1,0,,,,\nx,1,0,,,,\n43,1,5,,,,\n\n44,1,0,soon,,,\n45,1,0,,,,\n"

    result = run(bot, text)

    assert problems(result) == [
        (3, "telegram_id 'x' is not a number"),
        (4, "paid_amount exceeds amount (5 > 1)"),
        (6, "due_date 'soon' is not a date (YYYY-MM-DD)"),
    ]
    assert result.created == 2  # what the good rows would have done
    assert not result.applied
    assert Pledge.objects.count() == 0
    assert result.summary() == "Nothing imported: 3 errors."


def test_skip_errors_imports_the_good_rows_and_reports_the_bad(bot):
    text = HEADER + "42,1,0,,,,\nx,1,0,,,,\n43,1,5,,,,\n45,2,0,,,,\n"

    result = run(bot, text, skip_errors=True)

    assert problems(result) == [(3, "telegram_id 'x' is not a number"), (4, "paid_amount exceeds amount (5 > 1)")]
    assert result.applied
    assert sorted(Pledge.objects.values_list("telegram_id", flat=True)) == [42, 45]
    assert result.summary() == "Imported: 2 created, 0 updated, 0 unchanged. Skipped 2 lines with errors."


def test_skip_errors_with_only_bad_rows_imports_nothing(bot):
    result = run(bot, HEADER + "x,1,0,,,,\n", skip_errors=True)

    assert not result.applied
    assert result.summary() == "Nothing imported: 1 error."


def test_a_dry_run_changes_nothing_and_says_what_would_happen(bot):
    Pledge.objects.create(bot=bot, telegram_id=42, campaign="Roof", amount=Decimal("1000"))

    result = run(bot, GOOD, dry_run=True)

    assert (result.created, result.updated, result.unchanged) == (1, 1, 0)
    assert not result.applied
    assert [(r.line, r.action, r.changes) for r in result.rows] == [
        (2, "updated", ["amount", "paid_amount", "due_date", "name"]),
        (3, "created", []),
    ]
    assert pledges() == [(42, Decimal("1000"), Decimal("0"), None, "USD", "Roof")]
    assert (
        result.summary()
        == "Dry run, nothing changed. The import would give: 1 created, 1 updated, 0 unchanged; 0 errors."
    )


def test_a_dry_run_of_a_file_with_errors_still_lists_every_error(bot):
    result = run(bot, HEADER + "x,1,0,,,,\n42,1,0,,,,\n", dry_run=True, skip_errors=True)

    assert problems(result) == [(2, "telegram_id 'x' is not a number")]
    assert result.created == 1
    assert Pledge.objects.count() == 0


def test_importing_the_same_file_again_changes_nothing(bot):
    run(bot, GOOD)
    ids = set(Pledge.objects.values_list("pk", flat=True))

    result = run(bot, GOOD)

    assert (result.created, result.updated, result.unchanged) == (0, 0, 2)
    assert set(Pledge.objects.values_list("pk", flat=True)) == ids
    assert pledges() == GOOD_PLEDGES


def test_a_changed_file_updates_the_pledges_it_names(bot):
    run(bot, GOOD)

    result = run(bot, HEADER + "42,1250,1250,2030-04-01,Ann Lee,EUR,Roof\n43,99.5,0,,Bob,,\n42,5,0,,,,Organ\n")

    assert (result.created, result.updated, result.unchanged) == (1, 1, 1)
    assert [(r.line, r.action, r.changes) for r in result.rows] == [
        (2, "updated", ["paid_amount", "due_date", "currency"]),
        (3, "unchanged", []),
        (4, "created", []),
    ]
    assert pledges() == [
        (42, Decimal("5"), Decimal("0"), None, "USD", "Organ"),
        (42, Decimal("1250"), Decimal("1250"), date(2030, 4, 1), "EUR", "Roof"),
        GOOD_PLEDGES[1],
    ]


def test_a_file_of_several_batches_creates_then_updates_every_row(bot):
    ann = TelegramUser.objects.create(bot=bot, telegram_id=2400, first_name="Ann")
    first = HEADER + "".join(f"{i},{i},0,,Donor {i},,\n" for i in range(1, 2501))
    second = HEADER + "".join(f"{i},{i + 1},1,2030-01-0{i % 9 + 1},Donor {i},EUR,\n" for i in range(1, 2501))

    assert (run(bot, first).created, Pledge.objects.count()) == (2500, 2500)
    result = run(bot, second)

    assert (result.created, result.updated, result.unchanged) == (0, 2500, 0)
    assert len(result.samples["updated"]) == 50
    pledge = Pledge.objects.get(telegram_id=2400)
    assert (pledge.amount, pledge.paid_amount, pledge.due_date, pledge.currency, pledge.member) == (
        Decimal("2401"),
        Decimal("1"),
        date(2030, 1, 7),
        "EUR",
        ann,
    )
    assert Pledge.objects.filter(currency="EUR", paid_amount=1).count() == 2500


def test_pledges_of_another_bot_are_never_touched(bot):
    other = Bot.objects.create(token="654321:AAE-other")
    Pledge.objects.create(bot=other, telegram_id=42, campaign="Roof", amount=Decimal("7"))

    result = run(bot, GOOD)

    assert result.created == 2
    assert Pledge.objects.get(bot=other).amount == Decimal("7")


def test_the_same_member_and_campaign_twice_in_one_file_is_an_error(bot):
    result = run(bot, HEADER + "42,1,0,,,,Roof\n42,2,0,,,,roof\n42,3,0,,,,Roof\n")

    assert problems(result) == [(4, "telegram_id 42 with campaign 'Roof' is already on line 2")]


def test_several_existing_pledges_for_the_same_campaign_are_not_guessed_between(bot):
    for amount in ("10", "20"):
        Pledge.objects.create(bot=bot, telegram_id=42, amount=Decimal(amount))

    result = run(bot, HEADER + "42,30,0,,,,\n")

    assert problems(result) == [
        (
            2,
            "telegram_id 42 already has 2 pledges with no campaign; "
            "give this row a campaign or merge them in the admin",
        )
    ]
    assert sorted(Pledge.objects.values_list("amount", flat=True)) == [Decimal("10"), Decimal("20")]


def test_a_pledge_attaches_to_a_member_who_has_started(bot):
    ann = TelegramUser.objects.create(bot=bot, telegram_id=42, first_name="Ann")
    TelegramUser.objects.create(bot=Bot.objects.create(token="654321:AAE-other"), telegram_id=43)

    run(bot, GOOD)

    assert Pledge.objects.get(telegram_id=42).member == ann
    assert Pledge.objects.get(telegram_id=43).member is None


def test_a_re_import_attaches_a_member_who_started_since(bot):
    run(bot, GOOD)
    ann = TelegramUser.objects.create(bot=bot, telegram_id=42, first_name="Ann")

    result = run(bot, GOOD)

    assert [(r.telegram_id, r.action, r.changes) for r in result.rows] == [
        (42, "updated", ["member"]),
        (43, "unchanged", []),
    ]
    assert Pledge.objects.get(telegram_id=42).member == ann


def test_the_name_is_stored_and_an_empty_name_keeps_the_one_there(bot):
    TelegramUser.objects.create(bot=bot, telegram_id=42, first_name="Ann")

    run(bot, GOOD)
    assert dict(Pledge.objects.values_list("telegram_id", "name")) == {42: "Ann Lee", 43: "Bob"}

    result = run(bot, HEADER + "42,1250,250,2030-03-01,,USD,Roof\n43,99.50,0,,Robert,,\n")

    assert [(r.telegram_id, r.action, r.changes) for r in result.rows] == [
        (42, "unchanged", []),
        (43, "updated", ["name"]),
    ]
    assert dict(Pledge.objects.values_list("telegram_id", "name")) == {42: "Ann Lee", 43: "Robert"}


def test_an_operators_note_is_never_touched(bot):
    Pledge.objects.create(bot=bot, telegram_id=43, name="Bob", amount=Decimal("99.50"), note="Pays in cash")

    result = run(bot, GOOD)

    assert Pledge.objects.get(telegram_id=43).note == "Pays in cash"
    assert result.unchanged == 1


def test_a_bom_crlf_blank_lines_and_semicolons(bot):
    text = (
        "\ufefftelegram_id;amount;paid_amount;due_date;campaign\r\n\r\n42;1250;250;2030-03-01;Roof\r\n\r\n43;x;0;;\r\n"
    )

    result = run(bot, text)

    assert problems(result) == [(5, "amount 'x' is not a number")]
    result = run(bot, text.replace("43;x", "43;99.50"))
    assert problems(result) == []
    assert pledges() == GOOD_PLEDGES


def test_tab_separated_with_a_quoted_name_containing_the_other_delimiters(bot):
    text = 'telegram_id\tamount\tpaid_amount\tdue_date\tname\n42\t10\t0\t\t"Lee, Ann; Jr"\n'

    result = run(bot, text)

    assert problems(result) == []
    assert Pledge.objects.get().name == "Lee, Ann; Jr"


def test_spreadsheet_padding_cells_are_ignored(bot):
    result = run(bot, "telegram_id;amount;paid_amount;due_date;;\n42;10;0;;;\n43;10;0;\n")

    assert (result.created, problems(result)) == (2, [])


def test_padding_with_something_in_it_is_not_ignored(bot):
    result = run(bot, "telegram_id;amount;paid_amount;due_date;;\n42;10;0;;;x\n")

    assert problems(result) == [(2, "expected 4 fields, found 6")]


def test_a_column_without_a_name_is_an_error(bot):
    result = run(bot, "telegram_id;amount;;paid_amount;due_date\n42;10;;0;\n")

    assert problems(result) == [(1, "Column 3 has no name.")]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", "The file is empty."),
        ("\n\n  \n", "The file is empty."),
        ('{"pledges": [{"telegram_id": 42}]}', "This does not look like a pledge CSV"),
        ("%PDF-1.4\n%\x00\x01binary", "This is not a CSV file: it contains binary data."),
        ("Dear team,\nplease find the pledges attached.\n", "This does not look like a pledge CSV"),
    ],
)
def test_a_file_that_is_not_a_pledge_csv_is_a_clear_error(bot, text, error):
    result = run(bot, text, skip_errors=True)

    assert len(result.errors) == 1
    assert result.errors[0].line == 1
    assert result.errors[0].reason.startswith(error)
    assert not result.applied
    assert Pledge.objects.count() == 0


def test_a_header_only_file_imports_nothing_without_error(bot):
    result = run(bot, HEADER)

    assert (problems(result), result.applied) == ([], False)
    assert result.summary() == "Nothing imported: the file has no pledges."


def test_a_failure_while_writing_leaves_nothing_behind(bot, monkeypatch):
    Pledge.objects.create(bot=bot, telegram_id=43, amount=Decimal("1"))

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("broadcasts.importing._update", broken)
    with pytest.raises(RuntimeError):
        run(bot, GOOD)

    assert list(Pledge.objects.values_list("telegram_id", "amount")) == [(43, Decimal("1"))]


# The management command


@pytest.fixture
def csv_file(tmp_path):
    def write(text: str, encoding: str = "utf-8"):
        path = tmp_path / "pledges.csv"
        path.write_bytes(text.encode(encoding))
        return str(path)

    return write


def command(*args):
    out, err = io.StringIO(), io.StringIO()
    call_command("import_pledges", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_the_command_imports_and_prints_a_summary(bot, csv_file):
    out, err = command(csv_file(GOOD), "--bot", "123456")

    assert out == "Imported: 2 created, 0 updated, 0 unchanged.\n"
    assert err == ""
    assert pledges() == GOOD_PLEDGES


def test_the_command_reads_a_bom_and_windows_line_endings(bot, csv_file):
    out, _ = command(csv_file("\ufeff" + GOOD.replace("\n", "\r\n")), "--bot", "123456")

    assert out == "Imported: 2 created, 0 updated, 0 unchanged.\n"
    assert pledges() == GOOD_PLEDGES


def test_the_command_with_errors_prints_each_and_fails(bot, csv_file):
    path = csv_file(HEADER + "42,1,0,,,,\nx,1,0,,,,\n43,1,0,2030-13-01,,,\n")

    with pytest.raises(CommandError, match=r"^Nothing imported: 2 errors\.$"):
        command(path, "--bot", "123456")

    assert Pledge.objects.count() == 0


def test_the_command_error_lines(bot, csv_file, capsys):
    path = csv_file(HEADER + "x,1,0,,,,\n")
    err = io.StringIO()

    with pytest.raises(CommandError):
        call_command("import_pledges", path, "--bot", "123456", stderr=err)

    assert err.getvalue() == "line 2: telegram_id 'x' is not a number\n"


def test_the_command_skips_errors_when_asked_and_succeeds(bot, csv_file):
    out, err = command(csv_file(HEADER + "42,1,0,,,,\nx,1,0,,,,\n"), "--bot", "123456", "--skip-errors")

    assert out == "Imported: 1 created, 0 updated, 0 unchanged. Skipped 1 line with errors.\n"
    assert err == "line 3: telegram_id 'x' is not a number\n"
    assert Pledge.objects.count() == 1


def test_the_command_dry_run_changes_nothing(bot, csv_file):
    out, _ = command(csv_file(GOOD), "--bot", "123456", "--dry-run", "-v", "2")

    assert out.splitlines() == [
        "line 2: created 42 Roof",
        "line 3: created 43",
        "Dry run, nothing changed. The import would give: 2 created, 0 updated, 0 unchanged; 0 errors.",
    ]
    assert Pledge.objects.count() == 0


def test_the_command_dry_run_with_errors_fails(bot, csv_file):
    with pytest.raises(CommandError, match="Dry run"):
        command(csv_file(HEADER + "x,1,0,,,,\n"), "--bot", "123456", "--dry-run")


def test_the_command_re_import_reports_unchanged(bot, csv_file):
    path = csv_file(GOOD)
    command(path, "--bot", "123456")

    out, _ = command(path, "--bot", "123456")

    assert out == "Imported: 0 created, 0 updated, 2 unchanged.\n"
    assert Pledge.objects.count() == 2


def test_the_command_chooses_the_bot(bot, csv_file):
    other = Bot.objects.create(token="654321:AAE-other")

    with pytest.raises(CommandError, match="Several bots are active"):
        command(csv_file(GOOD))
    command(csv_file(GOOD), "--bot", "654321")

    assert set(Pledge.objects.values_list("bot", flat=True)) == {other.pk}


def test_the_command_explains_a_missing_or_non_utf8_file(bot, csv_file, tmp_path):
    with pytest.raises(CommandError, match="No such file"):
        command(str(tmp_path / "nope.csv"), "--bot", "123456")
    err = io.StringIO()
    with pytest.raises(CommandError, match="Nothing imported: 1 error"):
        path = csv_file(HEADER + "42,1,0,,Zoë,,\n", encoding="latin-1")
        call_command("import_pledges", path, "--bot", "123456", stderr=err)
    assert err.getvalue().startswith("line 1: The file is not UTF-8 text.")


def everything_from(reader: int) -> bytes:
    """What was written before the writer closed: a pty hands it over in pieces, then EIO."""
    data = b""
    try:
        while chunk := os.read(reader, 65536):
            data += chunk
    except OSError:
        pass
    finally:
        os.close(reader)
    return data


def test_the_command_shows_its_progress_on_a_terminal_and_not_on_a_pipe(bot, csv_file):
    path = csv_file(HEADER + "".join(f"{i},1,0,,,,\n" for i in range(1, 2501)))

    def stderr_of_import(reader: int, writer: int) -> str:
        with os.fdopen(writer, "w") as stream:
            call_command("import_pledges", path, "--bot", "123456", stdout=io.StringIO(), stderr=stream)
        return everything_from(reader).decode()

    assert (
        stderr_of_import(*pty.openpty())
        == "\r 40% 1,001/2,501 lines\r 80% 2,001/2,501 lines\r100% 2,501/2,501 lines\r\n"
    )
    Pledge.objects.all().delete()
    assert stderr_of_import(*os.pipe()) == ""
    assert Pledge.objects.count() == 2500


def test_the_command_reports_a_missing_column(bot, csv_file):
    err = io.StringIO()

    with pytest.raises(CommandError):
        call_command("import_pledges", csv_file("telegram_id,amount,due_date\n"), "--bot", "123456", stderr=err)

    assert err.getvalue() == "line 1: Missing required column: paid_amount.\n"


# The admin: check the upload, then import the kept file with one button

IMPORT_URL = "/admin/broadcasts/pledge/import/"


def upload(client, text, bot=None, encoding="utf-8"):
    data = {"file": SimpleUploadedFile("pledges.csv", text.encode(encoding), content_type="text/csv")}
    data |= {"bot": bot.pk} if bot else {}
    return client.post(IMPORT_URL, data)


def kept_files():
    return sorted((Path(settings.VAR_DIR) / "pledge-imports").glob("*.csv"))


@pytest.fixture(autouse=True)
def no_kept_files():
    for path in kept_files():
        path.unlink()


def confirm(client, response):
    """Press "Import these N rows": the form carries the bot and the kept file's token, no file."""
    form = response.context["confirm"]
    return client.post(IMPORT_URL, {"bot": form["bot"].value(), "token": form["token"].value()}, follow=True)


def test_the_changelist_links_to_the_import_page(admin_client, bot):
    response = admin_client.get("/admin/broadcasts/pledge/")

    assert response.status_code == 200
    assert f'href="{IMPORT_URL}"' in response.content.decode()


def test_the_import_page_asks_for_the_bot_and_file_and_nothing_else(admin_client, bot):
    response = admin_client.get(IMPORT_URL)

    html = response.content.decode()
    assert response.status_code == 200
    assert 'type="file" name="file"' in html
    assert 'type="checkbox"' not in html
    assert f'<option value="{bot.pk}" selected>' in html
    assert "telegram_id, amount, paid_amount, due_date" in html


def test_an_upload_is_checked_and_kept_and_one_button_imports_it(admin_client, bot):
    Pledge.objects.create(bot=bot, telegram_id=43, amount=Decimal("1"))

    response = upload(admin_client, GOOD + "x,1,0,,Carol,,\n", bot=bot)

    html = response.content.decode()
    assert Pledge.objects.count() == 1
    assert "Dry run, nothing changed. The import would give: 1 created, 1 updated, 0 unchanged; 1 error." in html
    assert [response.context["result"].created, response.context["result"].error_count] == [1, 1]
    assert "<td>4</td><td>telegram_id &#x27;x&#x27; is not a number</td><td><code>x,1,0,,Carol,,</code></td>" in html
    assert "<td>2</td><td>42</td><td>Ann Lee</td><td>Roof</td>" in html
    assert 'value="Import these 2 rows"' in html
    assert "The 1 line with errors will be skipped." in html
    assert len(kept_files()) == 1

    done = confirm(admin_client, response)

    assert done.redirect_chain == [("/admin/broadcasts/pledge/", 302)]
    assert "Imported: 1 created, 1 updated, 0 unchanged. Skipped 1 line with errors." in done.content.decode()
    assert pledges() == GOOD_PLEDGES
    assert kept_files() == []


def test_a_kept_file_is_imported_once_and_a_made_up_token_is_refused(admin_client, bot):
    response = upload(admin_client, GOOD, bot=bot)
    confirm(admin_client, response)

    again = confirm(admin_client, response)
    made_up = admin_client.post(IMPORT_URL, {"bot": bot.pk, "token": "../../settings"}, follow=True)

    for page in (again, made_up):
        assert page.redirect_chain == [(IMPORT_URL, 302)]
        assert "That file is no longer here (kept for a day); choose it again." in page.content.decode()
    assert Pledge.objects.count() == 2


def test_kept_files_older_than_a_day_are_removed(admin_client, bot):
    response = upload(admin_client, GOOD, bot=bot)
    [kept] = kept_files()
    day_old = time.time() - 86400 - 60
    os.utime(kept, (day_old, day_old))

    admin_client.get(IMPORT_URL)

    assert kept_files() == []
    assert "no longer here" in confirm(admin_client, response).content.decode()
    assert Pledge.objects.count() == 0


def test_a_large_file_is_summarised_with_the_first_rows_of_each_kind(admin_client, bot):
    Pledge.objects.bulk_create(
        Pledge(bot=bot, telegram_id=i, name=f"Donor {i}", amount=Decimal("5")) for i in range(1, 121)
    )
    rows = [f"{i},{5 if i <= 60 else 6},0,,Donor {i},," for i in range(1, 301)] + ["y,1,0,,,,"] * 70

    response = upload(admin_client, HEADER + "\n".join(rows) + "\n", bot=bot)

    result = response.context["result"]
    assert (result.created, result.updated, result.unchanged, result.error_count) == (180, 60, 60, 70)
    assert [len(result.samples[kind]) for kind in ("created", "updated", "unchanged")] == [50, 50, 50]
    assert len(result.errors) == 50
    html = response.content.decode()
    assert "Created (the first 50 of 180)" in html
    assert "Errors (the first 50 of 70)" in html
    assert 'value="Import these 300 rows"' in html
    assert "<td>Donor 121</td>" in html and "<td>Donor 171</td>" not in html


def test_a_file_with_nothing_to_import_offers_no_button_and_is_not_kept(admin_client, bot):
    response = upload(admin_client, HEADER + "42,1,0,,,,\n43,5,6,,,,\n".replace("42,1", "x,1"), bot=bot)

    html = response.content.decode()
    assert "Dry run, nothing changed. The import would give: 0 created, 0 updated, 0 unchanged; 2 errors." in html
    assert "<tr><td>3</td><td>paid_amount exceeds amount (6 &gt; 5)</td><td><code>43,5,6,,,,</code></td></tr>" in html
    assert response.context["confirm"] is None
    assert kept_files() == []
    assert Pledge.objects.count() == 0


def test_an_admin_upload_that_is_not_utf8_or_not_csv(admin_client, bot):
    latin = upload(admin_client, HEADER + "42,1,0,,Zoë,,\n", bot=bot, encoding="latin-1")
    binary = admin_client.post(
        IMPORT_URL, {"bot": bot.pk, "file": SimpleUploadedFile("x.xlsx", b"PK\x03\x04\x00\x00binary")}
    )

    assert "The file is not UTF-8 text." in latin.content.decode()
    assert "This is not a CSV file: it contains binary data." in binary.content.decode()
    assert Pledge.objects.count() == 0
    assert kept_files() == []


def test_the_import_needs_a_bot_and_a_file(admin_client, bot):
    response = admin_client.post(IMPORT_URL, {})

    assert response.status_code == 200
    assert response.context["form"].errors.keys() == {"bot", "file"}
    assert response.context["result"] is None


@pytest.fixture
def staff_client(client, db):
    staff = User.objects.create_user("clerk", password="x", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_pledge"))
    client.force_login(staff)
    return client, staff


def test_the_import_needs_add_and_change_permission(staff_client, bot):
    client, staff = staff_client

    assert client.get(IMPORT_URL).status_code == 403
    assert upload(client, GOOD, bot=bot).status_code == 403
    assert IMPORT_URL not in client.get("/admin/broadcasts/pledge/").content.decode()
    assert Pledge.objects.count() == 0

    staff.user_permissions.add(*Permission.objects.filter(codename__in=["add_pledge", "change_pledge"]))
    assert client.get(IMPORT_URL).status_code == 200


def test_anonymous_visitors_are_sent_to_the_login_page(client, db):
    response = client.get(IMPORT_URL)

    assert response.status_code == 302
    assert response.url.startswith("/admin/login/")


def test_the_changelist_filters_overdue_and_searches_names(admin_client, bot):
    ann = TelegramUser.objects.create(bot=bot, telegram_id=42, first_name="Ann", username="annie")
    past = date.today() - timedelta(days=3)
    Pledge.objects.create(bot=bot, member=ann, telegram_id=42, amount=Decimal("10"), due_date=past, campaign="Roof")
    Pledge.objects.create(bot=bot, telegram_id=43, amount=Decimal("10"), paid_amount=Decimal("10"), due_date=past)
    Pledge.objects.create(bot=bot, telegram_id=44, amount=Decimal("1250"), due_date=date.today() + timedelta(days=9))

    def listed(query):
        response = admin_client.get("/admin/broadcasts/pledge/" + query)
        assert response.status_code == 200
        return sorted(p.telegram_id for p in response.context["cl"].result_list)

    assert listed("?overdue=yes") == [42]
    assert listed("?overdue=no") == [43, 44]
    assert listed("?q=annie") == [42]
    assert listed("?q=44") == [44]
    assert listed("?q=roof") == [42]
    assert listed("?campaign=Roof") == [42]
    html = admin_client.get("/admin/broadcasts/pledge/").content.decode()
    assert "1,250 USD" in html
    assert "44 (not started)" in html
    assert "3 days overdue" in html


def test_the_message_template_admin_lists_placeholders_and_warns(admin_client, db):
    from broadcasts.models import MessageTemplate

    template = MessageTemplate.objects.create(name="Reminder", text="Hi #name, #balnce left #news")

    html = admin_client.get(f"/admin/broadcasts/messagetemplate/{template.pk}/change/").content.decode()

    assert "<code>#days_remain</code>" in html
    assert "Not placeholders, sent as written: #balnce" in html


@pytest.mark.django_db(transaction=True)
def test_the_migration_moves_imported_names_out_of_notes():
    before, after = ("broadcasts", "0007_pledge_name"), ("broadcasts", "0008_pledge_name_from_note")
    executor = MigrationExecutor(connection)
    executor.migrate([before])
    old = executor.loader.project_state([before]).apps
    old_bot = old.get_model("bots", "Bot").objects.create(token="123456:AAE-secret", telegram_id=123456)
    OldPledge = old.get_model("broadcasts", "Pledge")
    for telegram_id, note in [(1, "name: Ann Lee"), (2, "Pays in cash"), (3, "name: Bob\nand a note")]:
        OldPledge.objects.create(bot=old_bot, telegram_id=telegram_id, amount=Decimal("1"), note=note)

    executor = MigrationExecutor(connection)
    executor.migrate([after])
    moved = executor.loader.project_state([after]).apps.get_model("broadcasts", "Pledge")
    rows = sorted(moved.objects.values_list("telegram_id", "name", "note"))
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())  # as the other tests expect it

    assert rows == [
        (1, "Ann Lee", ""),
        (2, "", "Pays in cash"),
        (3, "", "name: Bob\nand a note"),
    ]
