"""CSV downloads of pledges and of a broadcast's deliveries, streamed row by row so a
100,000-row export never sits in memory."""

import csv
from collections.abc import Iterable, Iterator
from datetime import datetime

from django.db.models import QuerySet
from django.http import StreamingHttpResponse
from django.utils import timezone

from broadcasts.models import Delivery, Pledge

CHUNK_SIZE = 2000
PLEDGE_COLUMNS = [
    "telegram_id",
    "name",
    "member",
    "amount",
    "paid_amount",
    "balance",
    "currency",
    "due_date",
    "days_overdue",
    "campaign",
    "note",
]
DELIVERY_COLUMNS = ["telegram_id", "member", "username", "state", "error", "error_kind", "attempts", "sent_at"]


class _Echo:
    """csv.writer writes into this and gets the line back, to hand to the response."""

    def write(self, value: str) -> str:
        return value


def csv_response(filename: str, header: list[str], rows: Iterable[list]) -> StreamingHttpResponse:
    writer = csv.writer(_Echo())

    def lines() -> Iterator[str]:
        yield "\ufeff"  # spreadsheets open the file as UTF-8 only with a BOM
        yield writer.writerow(header)
        for row in rows:
            yield writer.writerow(row)

    response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def pledges_csv(pledges: QuerySet) -> StreamingHttpResponse:
    rows = (_pledge_row(p) for p in pledges.select_related("member").iterator(chunk_size=CHUNK_SIZE))
    return csv_response(f"pledges-{_stamp()}.csv", PLEDGE_COLUMNS, rows)


def deliveries_csv(deliveries: QuerySet, name: str) -> StreamingHttpResponse:
    rows = (_delivery_row(d) for d in deliveries.select_related("member").iterator(chunk_size=CHUNK_SIZE))
    return csv_response(f"{name}-{_stamp()}.csv", DELIVERY_COLUMNS, rows)


def _pledge_row(pledge: Pledge) -> list:
    member = pledge.member
    return [
        pledge.telegram_id,
        pledge.name,
        _member_name(member) if member else "",
        pledge.amount,
        pledge.paid_amount,
        pledge.balance,
        pledge.currency,
        pledge.due_date or "",
        pledge.days_overdue or "",
        pledge.campaign,
        pledge.note,
    ]


def _delivery_row(delivery: Delivery) -> list:
    member = delivery.member
    return [
        member.telegram_id,
        _member_name(member),
        member.username,
        delivery.get_status_display(),
        delivery.error,
        delivery.get_error_class_display(),
        delivery.attempts,
        _iso(delivery.sent_at),
    ]


def _member_name(member) -> str:
    return f"{member.first_name} {member.last_name}".strip()


def _iso(moment: datetime | None) -> str:
    return timezone.localtime(moment).isoformat(timespec="seconds") if moment else ""


def _stamp() -> str:
    return timezone.localtime().strftime("%Y%m%d-%H%M")
