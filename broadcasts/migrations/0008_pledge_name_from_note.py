"""The importer used to keep the CSV's name in the note ("name: Ann Lee") of pledges whose
member had not pressed /start; it now has a field of its own."""

from django.db import migrations

NAME_NOTE = "name: "


def names_out_of_notes(apps, schema_editor):
    Pledge = apps.get_model("broadcasts", "Pledge")
    max_length = Pledge._meta.get_field("name").max_length
    noted = Pledge.objects.filter(name="", note__startswith=NAME_NOTE).exclude(note__contains="\n")
    for pledge in noted.iterator(chunk_size=1000):
        name = pledge.note.removeprefix(NAME_NOTE).strip()
        if len(name) <= max_length:
            Pledge.objects.filter(pk=pledge.pk).update(name=name, note="")


class Migration(migrations.Migration):
    dependencies = [("broadcasts", "0007_pledge_name")]

    operations = [migrations.RunPython(names_out_of_notes, migrations.RunPython.noop)]
