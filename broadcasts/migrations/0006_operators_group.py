# The default "Operators" group: what the people who run campaigns need, and no more
# (no bots, tokens, users or groups). The README's permission table says what each allows.

from django.db import migrations

OPERATORS = "Operators"
PERMISSIONS = {
    "queueing": ["view_queue_dashboard", "view_jobrecord", "change_jobrecord", "view_alert"],
    "broadcasts": [
        "add_broadcast",
        "change_broadcast",
        "view_broadcast",
        "view_delivery",
        "add_pledge",
        "change_pledge",
        "view_pledge",
        "delete_pledge",
        "add_messagetemplate",
        "change_messagetemplate",
        "view_messagetemplate",
        "delete_messagetemplate",
    ],
    "bots": ["view_telegramuser"],
}


def create_operators(apps, schema_editor):
    from django.contrib.auth.management import create_permissions

    # Permissions are otherwise created after the last migration: make them now.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0, using=schema_editor.connection.alias)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.get_or_create(name=OPERATORS)
    for app_label, codenames in PERMISSIONS.items():
        found = Permission.objects.filter(content_type__app_label=app_label, codename__in=codenames)
        missing = set(codenames) - {p.codename for p in found}
        if missing:
            raise LookupError(f"Permissions not found for the Operators group: {sorted(missing)}")
        group.permissions.add(*found)


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("broadcasts", "0005_broadcast_stall_delivery_unknown"),
        ("bots", "0005_update_handling_since"),
        ("queueing", "0007_queue_dashboard_permission"),
    ]

    # Undoing it leaves the group: operators may have been added to it since.
    operations = [migrations.RunPython(create_operators, migrations.RunPython.noop)]
