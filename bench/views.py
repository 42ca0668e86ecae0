"""Baselines for the webhook: the cost of a Django request, and of one durable INSERT."""

from django.db import connection
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

# Created by bench.webhook at set-up; the database is thrown away afterwards.
INSERT_TABLE = "bench_insert"


@csrf_exempt
def ok(request: HttpRequest) -> HttpResponse:
    """The whole Django request cycle and nothing else."""
    return HttpResponse(status=200)


@csrf_exempt
def insert(request: HttpRequest) -> HttpResponse:
    """One INSERT of the body in autocommit: the floor for accepting an update durably."""
    with connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO {INSERT_TABLE} (body) VALUES (%s)", [request.body.decode()])
    return HttpResponse(status=200)


def create_insert_table() -> None:
    key = "integer PRIMARY KEY AUTOINCREMENT" if connection.vendor == "sqlite" else "bigserial PRIMARY KEY"
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TABLE IF NOT EXISTS {INSERT_TABLE} (id {key}, body text NOT NULL)")
