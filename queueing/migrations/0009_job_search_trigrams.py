"""A trigram index for the job list's search on PostgreSQL (queueing.admin.SEARCH_TEXT): with a
million jobs, a search scanned them all (1.6 s); SQLite has no such index and keeps scanning."""

from django.db import migrations

INDEX = "queueing_jobrecord_search"
SEARCH_TEXT = "UPPER(label || ' ' || kind || ' ' || last_error || ' ' || args::text || ' ' || kwargs::text)"


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        schema_editor.execute(f"CREATE INDEX IF NOT EXISTS {INDEX} ON queueing_jobrecord USING gin (({SEARCH_TEXT}) gin_trgm_ops)")


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP INDEX IF EXISTS {INDEX}")


class Migration(migrations.Migration):
    dependencies = [("queueing", "0008_departures")]

    operations = [migrations.RunPython(create, drop)]
