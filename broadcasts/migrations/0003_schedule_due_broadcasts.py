from django.db import migrations

NAME = "start due broadcasts"


def add_schedule(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.update_or_create(
        name=NAME,
        defaults={
            "func": "broadcasts.tasks.enqueue_due_broadcasts",
            "schedule_type": "I",
            "minutes": 1,
            "repeats": -1,
            # No cluster: the default cluster runs it (supervisor's queue-default).
            "cluster": None,
        },
    )


def remove_schedule(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name=NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("broadcasts", "0002_broadcasts"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    operations = [migrations.RunPython(add_schedule, remove_schedule)]
