from django.db import migrations


def drop_schedule(apps, schema_editor):
    """Scheduled broadcasts are started by a housekeeping duty of the default cluster
    (broadcasts.tasks.start_due_broadcasts) now, not by this django-q2 Schedule."""
    apps.get_model("django_q", "Schedule").objects.filter(name="start due broadcasts").delete()


class Migration(migrations.Migration):
    dependencies = [
        ("broadcasts", "0009_click"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    # Going back does not bring the Schedule back: the function it called is gone.
    operations = [migrations.RunPython(drop_schedule, migrations.RunPython.noop)]
